//! Names for the numbers the kernel reports, as the JSON contract spells
//! them (errno, signal and resource names).

/// errno as its symbolic name; unknown ones as their number.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        22 => "EINVAL",
        24 => "EMFILE",
        28 => "ENOSPC",
        38 => "ENOSYS",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

const RESOURCES: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

pub fn resource_name(resource: u32) -> String {
    RESOURCES
        .get(resource as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("RLIMIT_{resource}"))
}

/// A signal by its name; unknown ones as their number.
pub fn signal_name(sig: i32) -> String {
    let n = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("SIG{sig}"),
    };
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(11), "EAGAIN");
        assert_eq!(errno_name(999), "E999");
        assert_eq!(resource_name(6), "RLIMIT_NPROC");
        assert_eq!(resource_name(9), "RLIMIT_AS");
        assert_eq!(resource_name(40), "RLIMIT_40");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(64), "SIG64");
    }
}
