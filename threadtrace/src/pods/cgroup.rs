//! Which pod and container a cgroup path belongs to, as kubelet and the
//! container runtimes name their cgroups. Only the path is read: no API
//! server, no runtime socket.
//!
//! The shapes, each seen on real nodes:
//!
//! | driver   | path |
//! | -------- | ---- |
//! | cgroupfs | `/kubepods/burstable/pod<uid>/<id>` (containerd, Docker), `/kubepods/pod<uid>/<id>` (guaranteed: no QoS level), `…/pod<uid>/crio-<id>` (CRI-O) |
//! | systemd  | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//! | systemd, as runc writes it in v1 hierarchies systemd does not manage | `/kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`, also under `/system.slice/containerd.service/` |
//!
//! Prefixes differ (`kubelet.slice/kubelet-kubepods.slice` in kind, a
//! custom `--cgroup-root`), and a reader in its own cgroup namespace sees
//! paths relative to its own root (`/../../kubepods.slice/…`): so the path
//! is searched for the pod's segment, not matched from the start.
use std::borrow::Cow;

/// The pod's quality-of-service class, from the cgroup kubelet put it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// What a cgroup path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// With dashes, as the API server shows it (the systemd driver writes
    /// underscores).
    pub pod_uid: String,
    /// None for a process in the pod's cgroup but in no container's (CRI-O's
    /// conmon, or a cgroupfs pod-level process).
    pub container_id: Option<String>,
    /// "containerd", "cri-o" or "docker"; None when the path does not say
    /// (cgroupfs names a container by its bare id).
    pub runtime: Option<&'static str>,
    pub qos: Qos,
}

/// The pod and container of a `/proc/PID/cgroup` path, or None outside
/// Kubernetes.
pub fn parse(path: &str) -> Option<PodRef> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The last pod segment: a pod nested in a pod's cgroup cannot be
    // created by kubelet, so the innermost one is the process's.
    for i in (0..segments.len()).rev() {
        let seg = segments[i];
        let Some((uid, qos, rest)) = pod_segment(&segments[..i], seg) else {
            continue;
        };
        // `…pod<uid>.slice:cri-containerd:<id>` carries the container in
        // the same segment; otherwise it is the next one.
        let (container_id, runtime, conmon) = match rest {
            Some(rest) => colon_container(rest)?,
            None => match segments.get(i + 1) {
                Some(next) => container_segment(next),
                None => (None, None, false),
            },
        };
        return Some(PodRef {
            pod_uid: uid,
            container_id,
            runtime: runtime.or(conmon.then_some("cri-o")),
            qos,
        });
    }
    None
}

/// `pod<uid>` (cgroupfs, after a `kubepods` segment) or
/// `…kubepods[-qos]-pod<uid>.slice[:prefix:id]` (systemd): the uid, the
/// QoS class, and what follows `.slice` when it is followed by `:`.
fn pod_segment<'a>(before: &[&str], seg: &'a str) -> Option<(String, Qos, Option<&'a str>)> {
    if let Some(uid) = seg.strip_prefix("pod") {
        // cgroupfs: the QoS level is the parent directory, none for
        // guaranteed pods.
        if !before.iter().any(|s| s.starts_with("kubepods")) {
            return None;
        }
        let qos = match before.last() {
            Some(&"burstable") => Qos::Burstable,
            Some(&"besteffort") => Qos::BestEffort,
            _ => Qos::Guaranteed,
        };
        return Some((pod_uid(uid)?, qos, None));
    }
    let (slice, rest) = match seg.split_once(".slice") {
        Some((slice, "")) => (slice, None),
        Some((slice, rest)) => (slice, Some(rest.strip_prefix(':')?)),
        None => return None,
    };
    let (unit, uid) = slice.rsplit_once("-pod")?;
    if !unit.contains("kubepods") {
        return None;
    }
    let qos = if unit.ends_with("-burstable") {
        Qos::Burstable
    } else if unit.ends_with("-besteffort") {
        Qos::BestEffort
    } else {
        Qos::Guaranteed
    };
    Some((pod_uid(uid)?, qos, rest))
}

/// A pod UID: 36 characters with dashes from the API server, 32 hex
/// digits for a static pod (the hash of its manifest); the systemd driver
/// turns dashes into underscores.
fn pod_uid(s: &str) -> Option<String> {
    let ok = (32..=36).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| s.replace('_', "-").to_ascii_lowercase())
}

/// A container ID: hex, 64 digits from every runtime in use; shorter ones
/// are accepted down to Docker's 12-digit short form.
fn container_id(s: &str) -> Option<String> {
    let ok = (12..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| s.to_ascii_lowercase())
}

type Container = (Option<String>, Option<&'static str>, bool);

/// The segment under the pod's: `cri-containerd-<id>.scope`,
/// `crio-<id>.scope` or `crio-<id>`, `docker-<id>.scope`, a bare `<id>`;
/// `crio-conmon-<id>` is CRI-O's monitor, not the container.
fn container_segment(seg: &str) -> Container {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    if name.starts_with("crio-conmon-") {
        return (None, None, true);
    }
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ] {
        if let Some(id) = name.strip_prefix(prefix) {
            return (container_id(id), container_id(id).map(|_| runtime), false);
        }
    }
    (container_id(name), None, false)
}

/// After `.slice:` in runc's systemd form: `cri-containerd:<id>`,
/// `crio:<id>`, `docker:<id>`.
fn colon_container(rest: &str) -> Option<Container> {
    let (prefix, id) = rest.split_once(':')?;
    let runtime = match prefix {
        "cri-containerd" => "containerd",
        "crio" => "cri-o",
        "docker" => "docker",
        _ => return Some((container_id(id), None, false)),
    };
    Some((container_id(id), container_id(id).map(|_| runtime), false))
}

/// The cgroup line to read first: cgroup2's (`0::`), then the systemd
/// name hierarchy, then the controllers: a process can be in a pod in one
/// hierarchy and at the root of another (v1 controllers kubelet does not
/// manage).
pub fn lines_in_order(cgroups: &[(String, String)]) -> impl Iterator<Item = &str> {
    let rank = |c: &str| match c {
        "" => 0,
        "name=systemd" => 1,
        _ => 2,
    };
    let mut v: Vec<(u8, &str)> = cgroups.iter().map(|(c, p)| (rank(c), p.as_str())).collect();
    v.sort_by_key(|(r, _)| *r);
    v.into_iter().map(|(_, p)| p)
}

/// A path as a cache key: paths of hostile length are cut, which only
/// costs a miss.
pub fn key(path: &str) -> Cow<'_, str> {
    const MAX: usize = 512;
    if path.len() <= MAX {
        Cow::Borrowed(path)
    } else {
        let mut end = MAX;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        Cow::Owned(path[..end].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6ef3ab5c-9a47-4d3b-9e2c-3bdb3e0c1a12";
    const UID_: &str = "6ef3ab5c_9a47_4d3b_9e2c_3bdb3e0c1a12";
    const ID: &str = "4e3b2c1d0f9e8d7c6b5a493827161504f3e2d1c0b9a89786756453423120f1e0";

    fn pod(path: &str) -> PodRef {
        parse(path).unwrap_or_else(|| panic!("no pod in {path}"))
    }

    #[test]
    fn containerd_with_the_systemd_driver_every_qos() {
        for (qos_dir, qos) in [
            (
                "kubepods-burstable.slice/kubepods-burstable",
                Qos::Burstable,
            ),
            (
                "kubepods-besteffort.slice/kubepods-besteffort",
                Qos::BestEffort,
            ),
            ("kubepods", Qos::Guaranteed),
        ] {
            let p = pod(&format!(
                "/kubepods.slice/{qos_dir}-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ));
            assert_eq!(p.pod_uid, UID);
            assert_eq!(p.container_id.as_deref(), Some(ID));
            assert_eq!(p.runtime, Some("containerd"));
            assert_eq!(p.qos, qos, "{qos_dir}");
        }
    }

    #[test]
    fn containerd_as_runc_writes_it_in_unmanaged_v1_hierarchies() {
        for path in [
            format!("/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
            format!(
                "/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"
            ),
        ] {
            let p = pod(&path);
            assert_eq!(
                (
                    p.pod_uid.as_str(),
                    p.container_id.as_deref(),
                    p.runtime,
                    p.qos
                ),
                (UID, Some(ID), Some("containerd"), Qos::Burstable),
                "{path}"
            );
        }
    }

    #[test]
    fn cgroupfs_driver_has_a_bare_id_and_guaranteed_pods_no_qos_level() {
        let p = pod(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(
            (p.pod_uid.as_str(), p.container_id.as_deref(), p.runtime),
            (UID, Some(ID), None)
        );
        assert_eq!(p.qos, Qos::Burstable);
        let g = pod(&format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!(g.qos, Qos::Guaranteed);
        let b = pod(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(b.qos, Qos::BestEffort);
    }

    #[test]
    fn cri_o_but_not_its_conmon() {
        let p = pod(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"
        ));
        assert_eq!(
            (p.container_id.as_deref(), p.runtime),
            (Some(ID), Some("cri-o"))
        );
        let c = pod(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!(c.pod_uid, UID, "conmon is in the pod");
        assert_eq!(c.container_id, None, "but in no container");
        let f = pod(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"));
        assert_eq!(
            (f.container_id.as_deref(), f.runtime),
            (Some(ID), Some("cri-o")),
            "CRI-O with cgroupfs"
        );
        let colon = pod(&format!("/kubepods-pod{UID_}.slice:crio:{ID}"));
        assert_eq!(colon.runtime, Some("cri-o"));
    }

    #[test]
    fn docker_with_the_systemd_driver() {
        let p = pod(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"
        ));
        assert_eq!(
            (p.container_id.as_deref(), p.runtime),
            (Some(ID), Some("docker"))
        );
    }

    #[test]
    fn relative_paths_seen_from_another_cgroup_namespace_and_other_roots() {
        let p = pod(&format!(
            "/../../kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(p.container_id.as_deref(), Some(ID));
        // kind: kubelet's own slice around kubepods.
        let k = pod(&format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!((k.pod_uid.as_str(), k.qos), (UID, Qos::BestEffort));
        // A pod-level path: the pod, no container.
        let podlevel = pod(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(podlevel.container_id, None);
    }

    #[test]
    fn static_pods_have_a_hash_for_a_uid() {
        let hash = "5ba5d2b8f1a8ffcb6d0f8a3f1b1b2c3d";
        let p = pod(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(p.pod_uid, hash);
    }

    #[test]
    fn host_paths_and_look_alikes_are_not_pods() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/containerd.service",
            "/system.slice/docker-0123456789ab.scope",
            "/threadtrace-e2e-pids-42",
            &format!("/podman/pod{UID}/{ID}"),
            &format!("/machine.slice/libpod-pod{UID_}.slice/libpod-{ID}.scope"),
            "/kubepods/burstable/podnot-a-uid/x",
            "/kubepods.slice/kubepods-burstable.slice",
            "",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }

    #[test]
    fn hostile_container_segments_give_no_id() {
        let p = pod(&format!(
            "/kubepods/burstable/pod{UID}/cri-containerd-../../etc.scope"
        ));
        assert_eq!(p.container_id, None);
        assert_eq!(p.runtime, None);
        assert_eq!(key(&"x".repeat(10_000)).len(), 512);
    }

    #[test]
    fn unified_line_is_read_first() {
        let lines = vec![
            ("pids".to_string(), "/a".to_string()),
            ("".to_string(), "/b".to_string()),
            ("name=systemd".to_string(), "/c".to_string()),
        ];
        assert_eq!(
            lines_in_order(&lines).collect::<Vec<_>>(),
            vec!["/b", "/c", "/a"]
        );
    }
}
