use pproc::parallel;

struct Counter(u32);

impl Counter {
    #[parallel]
    fn get(&self) -> u32 {
        self.0
    }
}

fn main() {}
