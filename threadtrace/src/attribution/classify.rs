//! Which library a module is, by name: a short, stable name for a file
//! path, recognizing vendored and renamed copies (wheels, conda, torch,
//! Debian's alternatives).

/// How a rule recognizes a path.
#[derive(Debug, Clone, Copy)]
enum Match {
    /// The file name starts with this.
    Name(&'static str),
    /// A directory of the path starts with this (Debian installs OpenBLAS
    /// as .../openblas-pthread/libblas.so.3 behind the alternatives).
    Dir(&'static str),
}

use Match::{Dir, Name};

/// First match wins: more specific names come before the ones they contain.
const RULES: &[(&str, &[Match])] = &[
    // numpy/scipy wheels vendor libscipy_openblas64_-<hash>.so, conda ships
    // libopenblasp-r0.3.x.so.
    (
        "libopenblas",
        &[
            Name("libopenblas"),
            Name("libscipy_openblas"),
            Dir("openblas"),
        ],
    ),
    // torch ships libgomp-<hash>.so.1.
    ("libgomp", &[Name("libgomp")]),
    ("libiomp5", &[Name("libiomp5"), Name("libiomp")]),
    (
        "libomp",
        &[Name("libomp.so"), Name("libomp-"), Name("libomp5")],
    ),
    ("libmkl", &[Name("libmkl_"), Name("libmkl.")]),
    ("libtbb", &[Name("libtbb")]),
    ("libblis", &[Name("libblis"), Dir("blis")]),
    ("libstdc++", &[Name("libstdc++")]),
    ("libc++", &[Name("libc++.so"), Name("libc++abi")]),
    ("libpython", &[Name("libpython")]),
    ("libjvm", &[Name("libjvm")]),
    ("libnode", &[Name("libnode")]),
    ("libuv", &[Name("libuv")]),
    ("libglib", &[Name("libglib-2"), Name("libgio-2")]),
    ("libcuda", &[Name("libcuda"), Name("libcudart")]),
    (
        "libc",
        &[
            Name("libc.so"),
            Name("libc-2."),
            Name("libpthread"),
            Name("libc.musl"),
            Name("ld-musl"),
        ],
    ),
    ("ld.so", &[Name("ld-linux"), Name("ld64.so")]),
];

/// Libraries that create threads on someone else's behalf: attribution
/// looks past their frames for the code that asked.
pub fn is_runtime(library: &str) -> bool {
    matches!(library, "libc" | "ld.so")
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The library name for a module path; `is_exe` when it is the process's
/// executable, whose code is named by the executable's name.
pub fn library(module: &str, is_exe: bool) -> String {
    let module = module.strip_suffix(" (deleted)").unwrap_or(module);
    if is_exe {
        return basename(module).to_string();
    }
    let name = basename(module);
    let dirs = module.rsplit('/').skip(1);
    for (lib, matches) in RULES {
        let hit = matches.iter().any(|m| match m {
            Name(p) => name.starts_with(p),
            Dir(p) => dirs.clone().any(|d| d.starts_with(p)),
        });
        if hit {
            return lib.to_string();
        }
    }
    // libfoo.so.1.2 and libfoo-1.2.so → libfoo; a program → its name.
    match name.find(".so") {
        Some(i) => {
            let stem = &name[..i];
            match stem.rfind('-') {
                Some(j) if stem[j + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
                    stem[..j].to_string()
                }
                _ => stem.to_string(),
            }
        }
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_renamed_and_vendored_copies() {
        let cases = [
            ("/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "libopenblas"),
            ("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3", "libopenblas"),
            ("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so", "libopenblas"),
            ("/opt/venv/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-ff651d7f.so", "libopenblas"),
            ("/opt/conda/lib/libopenblasp-r0.3.21.so", "libopenblas"),
            ("/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0", "libgomp"),
            ("/opt/venv/lib/python3.11/site-packages/torch/lib/libgomp-a34b3233.so.1", "libgomp"),
            ("/opt/intel/oneapi/compiler/lib/libiomp5.so", "libiomp5"),
            ("/usr/lib/llvm-16/lib/libomp.so.5", "libomp"),
            ("/opt/intel/oneapi/mkl/lib/libmkl_intel_thread.so.2", "libmkl"),
            ("/opt/intel/oneapi/mkl/lib/libmkl_core.so.2", "libmkl"),
            ("/usr/lib/x86_64-linux-gnu/libtbb.so.12", "libtbb"),
            ("/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30", "libstdc++"),
            ("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0", "libpython"),
            ("/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so", "libjvm"),
            ("/lib/x86_64-linux-gnu/libc.so.6", "libc"),
            ("/lib/x86_64-linux-gnu/libpthread.so.0", "libc"),
            ("/lib/ld-musl-x86_64.so.1", "libc"),
            ("/lib64/ld-linux-x86-64.so.2", "ld.so"),
            ("/usr/lib/x86_64-linux-gnu/libfoo.so.1.2", "libfoo"),
            ("/usr/lib/libbar-2.4.so", "libbar"),
            ("/usr/lib/libbaz-ng.so", "libbaz-ng"),
        ];
        for (path, want) in cases {
            assert_eq!(library(path, false), want, "{path}");
        }
    }

    #[test]
    fn the_program_itself_is_named_by_its_executable() {
        assert_eq!(library("/srv/app/bin/worker", true), "worker");
        assert_eq!(library("/usr/bin/python3.11", true), "python3.11");
        // Not the executable, no .so: still its file name.
        assert_eq!(library("/usr/bin/other", false), "other");
        // A library named like a program is named as a library when it is
        // not the executable, and a deleted file by its name.
        assert_eq!(
            library("/tmp/x/libscipy_openblas64_-99.so (deleted)", false),
            "libopenblas"
        );
    }

    #[test]
    fn runtimes_are_looked_past() {
        assert!(is_runtime("libc") && is_runtime("ld.so"));
        assert!(!is_runtime("libgomp") && !is_runtime("libstdc++"));
    }
}
