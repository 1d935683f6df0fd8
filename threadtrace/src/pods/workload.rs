//! The workload a pod belongs to, guessed from the pod's name as the
//! controllers generate it. A guess (a pod can be named anything): events
//! say so in `derived`.
//!
//! - Deployment: `<name>-<pod-template-hash>-<5>`
//! - ReplicaSet, DaemonSet, Job: `<name>-<5>`
//! - CronJob's Job: `<name>-<schedule time in minutes>-<5>`
//! - StatefulSet: `<name>-<ordinal>`
//!
//! The random parts use Kubernetes' alphabet (no vowels, no 0, 1, 3): a
//! word like `server` is never taken for one.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| ALPHABET.contains(&b))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The workload's name, or the pod's own when no pattern fits.
pub fn of_pod(pod: &str) -> &str {
    if let Some((rest, suffix)) = pod.rsplit_once('-') {
        if random(suffix, 5..=5) {
            // A pod-template-hash (up to 10 characters) or a CronJob's
            // schedule time, then the workload.
            if let Some((name, hash)) = rest.rsplit_once('-') {
                if !name.is_empty() && (random(hash, 6..=10) || digits(hash) && hash.len() >= 8) {
                    return name;
                }
            }
            if !rest.is_empty() {
                return rest;
            }
        }
        if digits(suffix) && !rest.is_empty() {
            return rest;
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::of_pod;

    #[test]
    fn controllers_names() {
        for (pod, workload) in [
            ("coredns-5d78c9869d-x7m2q", "coredns"),
            ("cart-7d4b9c8f6d-x2x9k", "cart"),
            ("nginx-deployment-66b6c48dd5-4jw2p", "nginx-deployment"),
            ("kube-proxy-zk9hv", "kube-proxy"),
            ("web-0", "web"),
            ("postgres-12", "postgres"),
            ("backup-28312345-8w2lp", "backup"),
            ("etcd-control-plane", "etcd-control-plane"),
            ("web-server", "web-server"),
            ("api-gateway-backend", "api-gateway-backend"),
            ("standalone", "standalone"),
            ("-x7m2q", "-x7m2q"),
        ] {
            assert_eq!(of_pod(pod), workload, "{pod}");
        }
    }
}
