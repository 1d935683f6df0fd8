//! std::thread::Builder::spawn in a loop, each thread blocking, until the
//! OS refuses one: print the error and exit 1 at once.
use std::time::Duration;

fn worker_main() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[inline(never)]
fn spawn_workers(max: usize) -> std::io::Result<usize> {
    for i in 0..max {
        if let Err(e) = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .stack_size(64 * 1024)
            .spawn(worker_main)
        {
            println!("created={i}");
            return Err(e);
        }
    }
    Ok(max)
}

fn main() {
    println!("pid={}", std::process::id());
    if let Err(e) = spawn_workers(4096) {
        eprintln!("rt_rust_std: failed to spawn thread: {e}");
        std::process::exit(1);
    }
}
