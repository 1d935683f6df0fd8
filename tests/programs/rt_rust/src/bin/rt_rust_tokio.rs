//! A tokio multi-thread runtime (WORKERS worker threads, argument 1, 4 by
//! default) whose blocking pool cannot start a single thread: under
//! `ulimit -u WORKERS+1` the workers take every thread the user may have,
//! and the first spawn_blocking panics ("OS can't spawn worker thread"),
//! which ends the process at once (exit 101): as a service with a panic
//! hook that exits would, since dropping the runtime while unwinding waits
//! for every blocking task that did get a thread.
use std::time::Duration;

fn main() {
    println!("pid={}", std::process::id());
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    let workers = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(1024)
        .thread_stack_size(64 * 1024)
        .build()
        .expect("runtime");
    rt.block_on(async {
        for i in 0..1024 {
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(3600)));
            println!("blocking={}", i + 1);
        }
    });
}
