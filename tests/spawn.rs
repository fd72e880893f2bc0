//! Starting children and getting their results back.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use pproc::{Call, Error, Handle, parallel};
use serde::{Deserialize, Serialize};

#[parallel]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[parallel]
fn nothing() {}

#[parallel]
fn pid() -> u32 {
    std::process::id()
}

/// What `ps` and `pkill` know the process by.
#[parallel]
fn comm() -> String {
    std::fs::read_to_string("/proc/self/comm").unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle { r: f64 },
    Rect(u32, u32),
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Scene {
    name: String,
    shapes: Vec<Shape>,
    tags: HashMap<String, Vec<u8>>,
    layers: BTreeMap<u32, Option<Scene>>,
    checked: Result<u8, String>,
    unit: (),
}

/// Returns the scene it was given, changed in a way the test can predict.
#[parallel]
fn rename(mut scene: Scene, suffix: String) -> Scene {
    scene.name.push_str(&suffix);
    scene.shapes.push(Shape::Empty);
    scene
}

#[parallel]
fn split(words: Vec<String>) -> (usize, Option<String>, Result<(), String>) {
    let longest = words.iter().max_by_key(|w| w.len()).cloned();
    (words.len(), longest, Err("kept".into()))
}

/// Starts a child of its own and returns both results.
#[parallel]
fn parent_of_add(a: i64) -> (i64, u32) {
    let h = add::start(a, 1).expect("a grandchild starts");
    let grandchild = h.pid();
    (h.join().expect("the grandchild returns"), grandchild)
}

/// Starts a call it was sent: calls cross process boundaries too.
#[parallel]
fn run_call(call: Call<i64>) -> i64 {
    call.start()
        .expect("the call starts")
        .join()
        .expect("the call returns")
}

#[parallel]
fn chatty(lines: u32) -> u32 {
    for i in 0..lines {
        println!("child line {i}");
        eprintln!("child error line {i}");
    }
    lines
}

#[parallel]
fn child_args() -> Vec<String> {
    std::env::args().collect()
}

#[parallel]
fn child_env() -> Option<String> {
    std::env::var("PPROC_CHILD").ok()
}

fn scene() -> Scene {
    let inner = Scene {
        name: "inner".into(),
        shapes: vec![Shape::Rect(1, 2)],
        tags: HashMap::new(),
        layers: BTreeMap::new(),
        checked: Err("no".into()),
        unit: (),
    };
    Scene {
        name: "outer".into(),
        shapes: vec![Shape::Circle { r: 1.5 }, Shape::Rect(3, 4)],
        tags: HashMap::from([("a".into(), vec![1, 2, 3]), ("b".into(), vec![])]),
        layers: BTreeMap::from([(1, Some(inner)), (2, None)]),
        checked: Ok(7),
        unit: (),
    }
}

#[test]
fn a_child_returns_its_result() {
    let h: Handle<i64> = add::start(2, 3).unwrap();
    assert_ne!(h.pid(), std::process::id());
    assert_eq!(h.name(), add::NAME);
    assert_eq!(h.join().unwrap(), 5);
    assert_eq!(add(2, 3), 5);
    assert_eq!(add::NAME, "spawn::add");
}

#[test]
fn a_child_is_another_process() {
    let child = pid::start().unwrap().join().unwrap();
    assert_ne!(child, std::process::id());
    nothing::start().unwrap().join().unwrap();
}

#[test]
fn rich_serde_types_round_trip() {
    let got = rename::start(scene(), "!".into()).unwrap().join().unwrap();
    let mut want = scene();
    want.name.push('!');
    want.shapes.push(Shape::Empty);
    assert_eq!(got, want);

    let words = vec!["a".to_string(), "longest".into(), "mid".into()];
    let got = split::start(words).unwrap().join().unwrap();
    assert_eq!(got, (3, Some("longest".into()), Err("kept".into())));
}

#[test]
fn calls_are_deferred_and_serializable() {
    let call: Call<i64> = add::call(40, 2).into();
    assert_eq!(call.name(), add::NAME);
    let copy = call.clone();
    assert_eq!(call.start().unwrap().join().unwrap(), 42);
    assert_eq!(copy.start().unwrap().join().unwrap(), 42);
}

#[test]
fn a_call_sent_to_a_child_runs_there() {
    assert_eq!(
        run_call::start(add::call(40, 2).into())
            .unwrap()
            .join()
            .unwrap(),
        42
    );
}

#[test]
fn children_start_children() {
    let (sum, grandchild) = parent_of_add::start(41).unwrap().join().unwrap();
    assert_eq!(sum, 42);
    assert_ne!(grandchild, std::process::id());
}

#[test]
fn sixty_four_children_at_once() {
    let handles: Vec<_> = (0..80).map(|i| add::start(i, i).unwrap()).collect();
    let pids: std::collections::HashSet<_> = handles.iter().map(Handle::pid).collect();
    assert_eq!(pids.len(), 80);
    let sums: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(sums, (0..80).map(|i| 2 * i).collect::<Vec<_>>());
}

#[test]
fn child_output_does_not_touch_the_protocol() {
    assert_eq!(chatty::start(3).unwrap().join().unwrap(), 3);
}

#[test]
fn the_parents_arguments_are_not_passed_on() {
    let args = child_args::start().unwrap().join().unwrap();
    assert_eq!(args.len(), 1, "{args:?}");
    assert_eq!(Some(&args[0]), std::env::args().next().as_ref());
}

#[test]
fn dispatch_variables_are_not_passed_on() {
    assert_eq!(child_env::start().unwrap().join().unwrap(), None);
}

#[test]
fn children_outlive_the_thread_that_started_them() {
    // PR_SET_PDEATHSIG follows the thread that created a child: started
    // from a thread that ends at once, the child must still finish.
    let h = std::thread::spawn(|| add::start(20, 22).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.join().unwrap(), 42);
}

#[test]
fn unknown_names_are_refused() {
    let err = Call::<i64>::new("spawn::missing", &(1, 2))
        .start()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unregistered { name } if name == "spawn::missing"),
        "{err}"
    );
    assert!(pproc::is_registered(add::NAME));
    assert!(pproc::registered().contains(&add::NAME));
}

#[test]
fn a_parallel_function_inside_a_function_body_runs() {
    // Imported in this body only: the function's body sees it, as any
    // function's here would.
    use std::collections::BTreeSet;

    /// Counts the letters of `word`, and how many are distinct.
    #[parallel]
    fn letters(word: String) -> (BTreeMap<char, usize>, usize) {
        let mut counts = BTreeMap::new();
        for c in word.chars() {
            *counts.entry(c).or_insert(0) += 1;
        }
        (counts, word.chars().collect::<BTreeSet<_>>().len())
    }

    let (counts, distinct) = letters::start("banana".into()).unwrap().join().unwrap();
    assert_eq!(counts, BTreeMap::from([('a', 3), ('b', 1), ('n', 2)]));
    assert_eq!(distinct, 3);
    assert!(letters::NAME.ends_with("::letters"));
    assert!(pproc::is_registered(letters::NAME));
}

#[test]
fn a_parallel_function_in_a_body_takes_types_of_that_body() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Job {
        n: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Done {
        twice: u32,
    }

    #[parallel]
    fn work(job: Job) -> Done {
        Done { twice: job.n * 2 }
    }

    let done: work::Output = work::start(Job { n: 21 }).unwrap().join().unwrap();
    assert_eq!(done, Done { twice: 42 });
    let all: Vec<Done> = pproc::pmap(work::call, (0..3).map(|n| Job { n })).unwrap();
    assert_eq!(
        all,
        [Done { twice: 0 }, Done { twice: 2 }, Done { twice: 4 }]
    );
}

#[test]
fn two_functions_of_one_name_in_two_bodies_are_refused() {
    fn first() -> pproc::Result<u32> {
        #[parallel]
        fn twin(x: u32) -> u32 {
            x + 1
        }
        twin::start(1)?.join()
    }
    fn second() -> pproc::Result<u32> {
        #[parallel]
        fn twin(x: u32) -> u32 {
            x + 2
        }
        twin::start(1)?.join()
    }
    for got in [first(), second()] {
        match got {
            Err(Error::Spawn(err)) => assert!(err.to_string().contains("rename one"), "{err}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_child_goes_by_its_programs_name() {
    let ours = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_ne!(ours.trim(), "exe");
    assert_eq!(comm::start().unwrap().join().unwrap(), ours);
}
