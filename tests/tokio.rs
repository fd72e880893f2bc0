//! The async front on real tokio runtimes: results, streams and sends that
//! wait in the reactor, cancellation that leaves no process, a thousand
//! children awaited at once on one thread, pool calls and maps.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use pproc::tokio::{AsyncHandle, JoinSet};
use pproc::{Builder, Channel, Cluster, Error, Map, Pool, Prefix, Queue, parallel};
use pproc_workspace::{children, serial, wait_gone};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[parallel]
fn fails() -> u8 {
    panic!("asked to fail")
}

/// Streams `n` values, then echoes the lengths of what it is sent until
/// it gets an empty one.
#[parallel]
fn chatty(ch: Channel<u64, Vec<u8>>, n: u64) -> u64 {
    for i in 0..n {
        ch.send(&i).unwrap();
    }
    let mut total = 0;
    loop {
        let got = ch.recv().unwrap();
        if got.is_empty() {
            return total;
        }
        total += got.len() as u64;
        ch.send(&(got.len() as u64)).unwrap();
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn results_streams_and_sends_are_awaited() {
    let _serial = serial();
    current_thread().block_on(async {
        assert_eq!(
            AsyncHandle::start(square::call(9)).unwrap().await.unwrap(),
            81
        );
        let err = AsyncHandle::start(fails::call())
            .unwrap()
            .join()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Panicked { ref message, .. } if message == "asked to fail"),
            "{err:?}"
        );

        let mut child = AsyncHandle::start(chatty::call(1000)).unwrap();
        let first: Vec<u64> = child
            .stream()
            .take(1000)
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(first, (0..1000).collect::<Vec<_>>());
        // A value larger than the socket's buffer: the send waits for room
        // in the reactor while the child reads.
        let big = vec![7_u8; 8 << 20];
        child.send(&big).await.unwrap();
        assert_eq!(child.recv().await.unwrap(), 8 << 20);
        child.send(&vec![1; 10]).await.unwrap();
        assert_eq!(child.recv().await.unwrap(), 10);
        child.send(&Vec::new()).await.unwrap();
        assert_eq!(child.join().await.unwrap(), (8 << 20) + 10);
    });
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_stream_ends_with_the_child_and_reports_a_crash() {
    let _serial = serial();
    current_thread().block_on(async {
        let mut child = AsyncHandle::start(chatty::call(5)).unwrap();
        let pid = child.pid();
        let mut got = Vec::new();
        let mut stream = Box::pin(child.stream());
        while got.len() < 5 {
            got.push(stream.next().await.unwrap().unwrap());
        }
        drop(stream);
        child.kill().unwrap();
        let rest: Vec<_> = child.stream().collect().await;
        assert!(
            matches!(rest[..], [Err(Error::Signaled { signal: 9 })]),
            "{rest:?}"
        );
        assert_eq!(got, [0, 1, 2, 3, 4]);
        wait_gone(pid);
    });
}

#[test]
fn waiting_on_a_child_blocks_no_runtime_thread() {
    let _serial = serial();
    current_thread().block_on(async {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            loop {
                every.tick().await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(
            AsyncHandle::start(nap::call(400)).unwrap().await.unwrap(),
            400
        );
        ticker.abort();
        // Only one thread runs this runtime: the ticker ran while the
        // child was awaited.
        assert!(ticks.load(Ordering::Relaxed) >= 3, "{ticks:?}");
    });
}

#[test]
fn a_dropped_or_aborted_wait_kills_and_reaps_the_child() {
    let _serial = serial();
    current_thread().block_on(async {
        // A timeout that fires drops the join future.
        let child = AsyncHandle::start(nap::call(60_000)).unwrap();
        let pid = child.pid();
        let waited = tokio::time::timeout(Duration::from_millis(100), child.join()).await;
        assert!(waited.is_err());
        wait_gone(pid);

        // An aborted task.
        let child = AsyncHandle::start(nap::call(60_000)).unwrap();
        let pid = child.pid();
        let task = tokio::spawn(child.join());
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        wait_gone(pid);

        // A handle dropped, and a set dropped with its children.
        let child = AsyncHandle::start(nap::call(60_000)).unwrap();
        let pid = child.pid();
        drop(child);
        wait_gone(pid);
        let mut set = JoinSet::new();
        let pids: Vec<u32> = (0..3)
            .map(|_| set.spawn(nap::call(60_000)).unwrap())
            .collect();
        drop(set);
        for pid in pids {
            wait_gone(pid);
        }
    });
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_thousand_children_are_awaited_at_once_on_one_thread() {
    let _serial = serial();
    current_thread().block_on(async {
        let mut set = JoinSet::new();
        let mut naps = std::collections::HashMap::new();
        for x in 0..1000 {
            let pid = set.spawn(nap::call(x % 50)).unwrap();
            naps.insert(pid, x % 50);
        }
        assert_eq!(set.len(), 1000);
        let mut total = 0;
        let mut ended = 0;
        while let Some((pid, result)) = set.join_next_with_pid().await {
            let slept = result.unwrap();
            assert_eq!(naps.remove(&pid), Some(slept), "pid {pid}");
            total += slept;
            ended += 1;
        }
        assert_eq!(ended, 1000);
        assert!(naps.is_empty());
        assert_eq!(total, (0..1000).map(|x| x % 50).sum::<u64>());
    });
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn pool_calls_and_maps_are_awaited() {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = Pool::new(2).unwrap();
        let calls: Vec<_> = (0..10)
            .map(|x| pool.start(square::call(x)).unwrap())
            .collect();
        let mut got = Vec::new();
        for call in calls {
            got.push(call.await.unwrap());
        }
        assert_eq!(got, (0..10).map(|x| x * x).collect::<Vec<_>>());
        pool.shutdown().unwrap();

        let squares: Vec<u64> = pproc::tokio::stream(Map::new(square::call, 0..500))
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(squares, (0..500).map(|x| x * x).collect::<Vec<_>>());
        let mut arrived: Vec<u64> = pproc::tokio::stream(Queue::new(square::call, 0..20))
            .map(Result::unwrap)
            .collect()
            .await;
        arrived.sort_unstable();
        assert_eq!(arrived, (0..20).map(|x| x * x).collect::<Vec<_>>());

        // A stream dropped early: the map's children go with it.
        let mut slow = Box::pin(pproc::tokio::stream(
            Map::new(nap::call, [10, 60_000, 60_000]).limit(3),
        ));
        assert_eq!(slow.next().await.unwrap().unwrap(), 10);
        drop(slow);
    });
    drop(runtime);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !children().is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", children());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child on another host (through the `env` launcher, so its agent runs
/// here too) is awaited, streamed and cancelled as a local one: its exit
/// is the link's, and dropping its future kills it on its host.
#[test]
fn a_remote_child_is_awaited_as_a_local_one() {
    let _serial = serial();
    current_thread().block_on(async {
        let cluster = Cluster::new().host(Prefix::new(["env"]).host("async"), 4);
        let remote = Builder::new().cluster(&cluster);
        let child = AsyncHandle::start_with(&remote, square::call(12)).unwrap();
        assert_eq!(child.await.unwrap(), 144);

        let mut child = AsyncHandle::start_with(&remote, chatty::call(100)).unwrap();
        let got: Vec<u64> = child.stream().take(100).map(Result::unwrap).collect().await;
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        child.send(&vec![0; 3]).await.unwrap();
        assert_eq!(child.recv().await.unwrap(), 3);
        child.send(&Vec::new()).await.unwrap();
        assert_eq!(child.join().await.unwrap(), 3);

        let child = AsyncHandle::start_with(&remote, nap::call(60_000)).unwrap();
        let pid = child.pid();
        let waited = tokio::time::timeout(Duration::from_millis(200), child.join()).await;
        assert!(waited.is_err());
        // The pid is the child's on its host, which is this machine.
        wait_gone(pid);
        // The agent goes too, so that the other tests find no child here.
        cluster.disconnect();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !children().is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", children());
        std::thread::sleep(Duration::from_millis(20));
    }
}
