use pproc::{parallel, Exchange};

#[parallel]
async fn fetch(x: u32) -> u32 {
    x
}

#[derive(Default, pproc::Exchange)]
struct Fetched {
    #[store]
    values: Vec<u32>,
}

fn main() -> pproc::Result<()> {
    let got: u32 = fetch::start(1)?.join()?;
    let _: fetch::Output = got;
    let mut ex = Exchange::new(Fetched::default());
    ex.start(fetch::call(2))?;
    assert!(fetch::NAME.ends_with("fetch"));
    Ok(())
}
