#![no_std]
// The library target exists so that threadtrace can name this crate as a
// build dependency; the programs are in the `threadtrace` binary target.
