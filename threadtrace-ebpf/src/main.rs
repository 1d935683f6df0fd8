//! threadtrace's kernel programs. One file per hook under `probes/`; the
//! maps and the helpers they share are in `maps.rs` and `emit.rs`.
#![no_std]
#![no_main]

mod emit;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_user, bpf_get_stack and ring buffers are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
