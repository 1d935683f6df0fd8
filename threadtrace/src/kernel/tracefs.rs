//! tracefs: mounted on demand (it is not at boot on our hosts), and the
//! tracepoint format files, parsed so field offsets follow the kernel.
use std::{collections::HashMap, ffi::CString, io, path::Path};

pub const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("cannot mount tracefs at {TRACEFS}: {0}")]
    Mount(io::Error),
    #[error("cannot read the format of {0}: {1}")]
    Format(String, io::Error),
}

pub fn is_mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir()
}

/// Mounts tracefs at /sys/kernel/tracing unless it is there already.
pub fn ensure_mounted() -> Result<bool, TracefsError> {
    if is_mounted() {
        return Ok(false);
    }
    let cs = |s: &str| CString::new(s).expect("no NUL");
    let (src, dst, fs) = (cs("nodev"), cs(TRACEFS), cs("tracefs"));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(TracefsError::Mount(io::Error::last_os_error()));
    }
    Ok(true)
}

pub fn tracepoint_exists(category: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .is_dir()
}

/// Field name → byte offset in the tracepoint's record.
pub fn field_offsets(category: &str, name: &str) -> Result<HashMap<String, u32>, TracefsError> {
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TracefsError::Format(format!("{category}:{name}"), e))?;
    Ok(parse_format(&text))
}

pub fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or("").trim();
        // "unsigned long anon_rss", "__data_loc char[] comm", "char comm[16]"
        let name = decl.rsplit(' ').next().unwrap_or("");
        let name = name.split('[').next().unwrap_or("");
        let offset = parts
            .filter_map(|p| p.trim().strip_prefix("offset:"))
            .find_map(|v| v.trim().parse().ok());
        if let (false, Some(off)) = (name.is_empty(), offset) {
            out.insert(name.to_string(), off);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mark_victim_format_of_6_18() {
        let f = "name: mark_victim\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:char comm2[16];\toffset:40;\tsize:16;\tsigned:0;\n";
        let m = parse_format(f);
        assert_eq!(m["pid"], 8);
        assert_eq!(m["comm"], 12);
        assert_eq!(m["anon_rss"], 24);
        assert_eq!(m["comm2"], 40);
        assert_eq!(m["common_type"], 0);
    }

    #[test]
    fn old_kernels_have_only_pid() {
        let m = parse_format("format:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n");
        assert_eq!(m.len(), 1);
        assert!(!m.contains_key("anon_rss"));
    }
}
