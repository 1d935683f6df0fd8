//! Build id → file. The kernel normalizes stack frames to (build id, file
//! offset); this finds the file to symbolize them with, even after the
//! process that failed is gone, from the mappings of live processes.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// A path the tracer can open (through /proc/PID/root for containers).
    pub open_path: PathBuf,
    /// The path as the process that maps it sees it.
    pub path: String,
}

/// Full rescans of /proc for an unknown build id happen at most this often.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct ModuleIndex {
    by_build_id: HashMap<Vec<u8>, ModuleFile>,
    /// Build ids already read, by (device, inode): each file is read once.
    seen: HashMap<(u64, u64), Option<Vec<u8>>>,
    last_rescan: Option<Instant>,
    dirs_indexed: bool,
    /// Build id by the path it was read through: frames of every event
    /// name their files, and a stat per frame adds up in a storm.
    by_path: HashMap<PathBuf, Option<Vec<u8>>>,
}

/// Where distributions install shared libraries: searched once, when a
/// build id is not mapped by any live process (its last user exited).
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ModuleIndex {
    /// The build id of a file by path, read once per path.
    pub fn id_of_path(&mut self, path: &str) -> Option<Vec<u8>> {
        if let Some(id) = self.by_path.get(std::path::Path::new(path)) {
            return id.clone();
        }
        if self.by_path.len() >= 65536 {
            self.by_path.clear();
        }
        let id = self.add(path.into(), path.to_string());
        self.by_path.insert(path.into(), id.clone());
        id
    }

    /// Reads a file's build id (once per inode) and indexes it.
    pub fn add(&mut self, open_path: PathBuf, path: String) -> Option<Vec<u8>> {
        let meta = std::fs::metadata(&open_path).ok()?;
        let key = (meta.dev(), meta.ino());
        let id = match self.seen.get(&key) {
            Some(id) => id.clone(),
            None => {
                let id = blazesym::helper::read_elf_build_id(&open_path)
                    .ok()
                    .flatten()
                    .map(|b| b.to_vec());
                self.seen.insert(key, id.clone());
                id
            }
        }?;
        self.by_build_id
            .entry(id.clone())
            .or_insert(ModuleFile { open_path, path });
        Some(id)
    }

    /// Indexes the executable mappings of a process.
    pub fn add_process(&mut self, pid: u32) {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        let own = crate::kernel::libc_targets::mount_ns(std::process::id());
        let foreign = crate::kernel::libc_targets::mount_ns(pid) != own;
        let mut last = "";
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let perms = f.nth(1).unwrap_or("");
            let Some(path) = f.nth(3) else { continue };
            if !perms.contains('x') || !path.starts_with('/') || path == last {
                continue;
            }
            last = path;
            let open = if foreign {
                PathBuf::from(format!("/proc/{pid}/root{path}"))
            } else {
                PathBuf::from(path)
            };
            self.add(open, path.to_string());
        }
    }

    /// Indexes the mappings of every live process.
    pub fn index_all(&mut self) {
        self.last_rescan = Some(Instant::now());
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                    self.add_process(pid);
                }
            }
        }
    }

    /// Indexes the shared libraries in the usual directories, one level of
    /// subdirectories deep (Debian's openblas-pthread/ and the like).
    pub fn index_dirs(&mut self) {
        self.dirs_indexed = true;
        let mut seen_dirs = std::collections::HashSet::new();
        let mut stack: Vec<(PathBuf, u32)> =
            LIB_DIRS.iter().map(|d| (PathBuf::from(d), 0)).collect();
        while let Some((dir, depth)) = stack.pop() {
            let Ok(canon) = std::fs::canonicalize(&dir) else {
                continue;
            };
            if !seen_dirs.insert(canon) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                let name = e.file_name();
                let name = name.to_string_lossy();
                if ft.is_dir() && depth < 1 {
                    stack.push((path, depth + 1));
                } else if ft.is_file() && name.contains(".so") {
                    self.add(path.clone(), path.display().to_string());
                }
            }
        }
    }

    /// The file with this build id; when unknown, index every live
    /// process's mappings (rate-limited) and then, once, the library
    /// directories, and look again.
    pub fn find(&mut self, build_id: &[u8]) -> Option<&ModuleFile> {
        if !self.by_build_id.contains_key(build_id)
            && self.last_rescan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
        {
            self.index_all();
        }
        if !self.by_build_id.contains_key(build_id) && !self.dirs_indexed {
            let t0 = Instant::now();
            self.index_dirs();
            log::debug!(
                "indexed library directories in {:?}: {} modules",
                t0.elapsed(),
                self.by_build_id.len()
            );
        }
        self.by_build_id.get(build_id)
    }

    pub fn len(&self) -> usize {
        self.by_build_id.len()
    }
}

/// The host's glibc, for tests that need a real distribution library.
#[cfg(test)]
pub(crate) fn host_libc() -> &'static str {
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("glibc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_this_process_and_finds_libc_by_build_id() {
        let mut idx = ModuleIndex::default();
        idx.add_process(std::process::id());
        assert!(idx.len() >= 2, "the test binary and libc at least");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let id = idx
            .add(exe.clone(), exe.display().to_string())
            .expect("our binary has a build id");
        assert_eq!(idx.find(&id).unwrap().path, exe.display().to_string());
        assert!(idx.find(&[0xde, 0xad]).is_none());
        // The miss searched the library directories: libc is there.
        let id = blazesym::helper::read_elf_build_id(&host_libc())
            .unwrap()
            .unwrap();
        assert!(idx.find(&id).is_some());
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }
}
