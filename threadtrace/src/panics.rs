//! Panics: one line for a person instead of a backtrace, and a way to
//! survive one where a bug can be reached by hostile input (attribution
//! parses files other users control): the panic is caught, its message
//! kept for the caller, and nothing is printed or torn down for it (the
//! dashboard restores the terminal on a panic that is not caught).
use std::{
    cell::{Cell, RefCell},
    panic::{self, AssertUnwindSafe, PanicHookInfo},
    sync::Once,
};

thread_local! {
    /// Inside `catch` on this thread.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The message of the panic `catch` is about to return.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn message(info: &PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    match info.location() {
        Some(l) => format!("{payload} at {}:{}", l.file(), l.line()),
        None => payload,
    }
}

/// A panic that nobody catches: one line on stderr, escaped (its message
/// may quote what a process chose), then the process goes on unwinding.
pub fn one_line_hook() {
    panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let line = format!(
            "threadtrace: internal error in thread {}: {} (please report it)",
            thread.name().unwrap_or("?"),
            message(info)
        );
        eprintln!("{}", crate::sanitize::line(&line, 2048));
    }));
}

/// Makes panics inside `catch` quiet. Installed after the dashboard's
/// hook (which gives the terminal back), so that it runs first.
pub fn install_catch_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.get() {
                CAUGHT.set(Some(message(info)));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic in it is returned as its message instead of
/// unwinding further. What `f` was changing may be left half done: the
/// caller decides what it can still trust.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_catch_hook();
    let was = CATCHING.replace(true);
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.set(was);
    r.map_err(|_| CAUGHT.take().unwrap_or_else(|| "a panic".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_returns_its_message_and_the_next_call_works() {
        let data = b"\x7fELF".to_vec();
        let r = catch(|| data[4]);
        let msg = r.unwrap_err();
        assert!(msg.contains("index out of bounds"), "{msg}");
        assert!(msg.contains("panics.rs"), "with its location: {msg}");
        assert_eq!(catch(|| 7), Ok(7));
        assert!(!CATCHING.get());
    }
}
