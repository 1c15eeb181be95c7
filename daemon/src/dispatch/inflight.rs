//! What the running rsyncs of one target cover, so that no two of them race over one part of
//! the tree.

use std::collections::{HashMap, HashSet};

use crate::fs::parents;

/// What the running rsyncs cover, so that no two of them race over one part of the tree.
///
/// Each rsync reads the source when it runs, and of two concurrent ones the one that read first
/// may write last. The case seen: a push of `d/f` read the source, `d` was renamed away, a push of
/// `d` deleted it at the target, then the first push created `d/f` again; both were confirmed.
/// A deletion removes a whole subtree at the target, so a path is held back while a deletion at
/// or above it runs, and a deletion waits for everything at, above or below it. Other pushes of
/// the same directory's entries run side by side: rsync writes only the paths listed
/// (`--no-implied-dirs`: a directory above a listed path is created if missing, never updated).
/// A path held back keeps its journal entry and goes once the conflicting push is over, reading
/// the source as it is then.
#[derive(Default)]
pub struct InFlight {
    /// Journal paths in running pushes.
    paths: HashSet<Vec<u8>>,
    /// What those rsyncs were told (see [`crate::rsync::plan_path`]), with counts.
    listed: HashMap<Vec<u8>, usize>,
    /// Every directory strictly above a listed path (the root excepted), with counts.
    above: HashMap<Vec<u8>, usize>,
    /// The listed paths that are deletions, with counts.
    deleting: HashMap<Vec<u8>, usize>,
}

/// What a batch holds in [`InFlight`] while it runs: its journal paths and what each stood for
/// when the batch started (listed path, whether a deletion).
#[derive(Default)]
pub struct Claim {
    pub paths: Vec<Vec<u8>>,
    pub plans: Vec<(Vec<u8>, bool)>,
}

fn count_up(m: &mut HashMap<Vec<u8>, usize>, k: &[u8]) {
    *m.entry(k.to_vec()).or_default() += 1;
}

fn count_down(m: &mut HashMap<Vec<u8>, usize>, k: &[u8]) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

impl InFlight {
    /// Whether journal path `p` must wait whatever it stands for now: it is in flight itself, or
    /// a deletion at or above it is (whatever `p` is planned as, that deletion's subtree
    /// includes it). Cheap, without a stat: a deleted tree's many paths are held back by this.
    pub fn held_as_is(&self, p: &[u8]) -> bool {
        self.paths.contains(p)
            || self.deleting.contains_key(p)
            || parents(p).any(|d| self.deleting.contains_key(d))
    }

    /// Whether journal path `p`, planned as `plan`, must wait for a running push.
    pub fn conflicts(&self, p: &[u8], plan: Option<&(Vec<u8>, bool)>) -> bool {
        if self.paths.contains(p) {
            return true;
        }
        let Some((listed, deletion)) = plan else {
            return false;
        };
        let deleted_above = parents(listed).any(|d| self.deleting.contains_key(d));
        if *deletion {
            deleted_above
                || self.listed.contains_key(listed.as_slice())
                || self.above.contains_key(listed.as_slice())
        } else {
            deleted_above || self.deleting.contains_key(listed.as_slice())
        }
    }

    pub fn claim(&mut self, claim: &Claim) {
        for p in &claim.paths {
            self.paths.insert(p.clone());
        }
        for (listed, deletion) in &claim.plans {
            count_up(&mut self.listed, listed);
            parents(listed).for_each(|d| count_up(&mut self.above, d));
            if *deletion {
                count_up(&mut self.deleting, listed);
            }
        }
    }

    pub fn release(&mut self, claim: &Claim) {
        for p in &claim.paths {
            self.paths.remove(p);
        }
        for (listed, deletion) in &claim.plans {
            count_down(&mut self.listed, listed);
            parents(listed).for_each(|d| count_down(&mut self.above, d));
            if *deletion {
                count_down(&mut self.deleting, listed);
            }
        }
    }

    /// Whether a running push covers `p`: lists it, a directory above it (a deletion, a moved
    /// directory) or something below it, or carries its journal path.
    pub fn touches(&self, p: &[u8]) -> bool {
        self.paths.contains(p)
            || self.listed.contains_key(p)
            || self.above.contains_key(p)
            || parents(p).any(|d| self.listed.contains_key(d))
    }

    /// Whether nothing at all is claimed (with no job running, anything else is a claim no job
    /// will release).
    pub fn is_clear(&self) -> bool {
        self.paths.is_empty()
            && self.listed.is_empty()
            && self.above.is_empty()
            && self.deleting.is_empty()
    }

    /// Whether journal path `p` is in a running push.
    pub fn carries(&self, p: &[u8]) -> bool {
        self.paths.contains(p)
    }

    /// Journal paths in flight.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(p: &str, deletion: bool) -> (Vec<u8>, bool) {
        (p.as_bytes().to_vec(), deletion)
    }

    fn claim(path: &str, listed: &str, deletion: bool) -> Claim {
        Claim {
            paths: vec![path.as_bytes().to_vec()],
            plans: vec![plan(listed, deletion)],
        }
    }

    #[test]
    fn a_deletion_in_flight_holds_back_its_subtree_and_waits_for_it() {
        let mut f = InFlight::default();
        // `d/sub/f` being created; `x/y/z` gone, with `x/y`: rsync is told to delete `x/y`.
        let (c1, c2) = (
            claim("d/sub/f", "d/sub/f", false),
            claim("x/y/z", "x/y", true),
        );
        f.claim(&c1);
        f.claim(&c2);
        let held = |f: &InFlight, p: &str, listed: &str, del: bool| {
            f.conflicts(p.as_bytes(), Some(&plan(listed, del)))
        };
        // The same journal path waits whatever it is now.
        assert!(held(&f, "d/sub/f", "d/sub/f", true));
        // Deletions at, above or below something in flight wait.
        for p in ["d", "d/sub", "x", "x/y", "x/y/w"] {
            assert!(held(&f, p, p, true), "deleting {p} waits");
        }
        // Anything at or below a running deletion waits.
        for p in ["x/y", "x/y/w", "x/y/w/v"] {
            assert!(held(&f, p, p, false), "creating {p} waits");
        }
        // Creations next to, above or below a running creation go; so do unrelated deletions.
        for p in ["d", "d/sub", "d/sub/g", "d/sub/f/g", "x", "x/z", "xy"] {
            assert!(!held(&f, p, p, false), "creating {p} goes");
        }
        // (Below a file being pushed: if it replaces a directory at the target, a creation
        // below it fails there and is retried; a deletion below it finds nothing.)
        for p in ["d/other", "d/sub/g", "d/sub/f/g", "x/z", "xy", "dd"] {
            assert!(!held(&f, p, p, true), "deleting {p} goes");
        }
        // Below a running deletion a path waits before it is even planned.
        for p in ["x/y", "x/y/w/v", "x/y/z"] {
            assert!(f.held_as_is(p.as_bytes()), "{p}");
        }
        for p in ["x", "x/z", "d/sub", "d/sub/f/g"] {
            assert!(!f.held_as_is(p.as_bytes()), "{p}");
        }
        assert!(f.held_as_is(b"d/sub/f"), "in flight itself");
        // The root and over-long paths are never listed: only their own journal path counts.
        assert!(!f.conflicts(b"", None));
        // Released, nothing is held.
        f.release(&c2);
        assert!(!held(&f, "x/y/w", "x/y/w", false) && !held(&f, "x", "x", true));
        assert!(held(&f, "d", "d", true));
        f.release(&c1);
        assert!(!held(&f, "d", "d", true));
        assert_eq!(
            (f.len(), f.listed.len(), f.above.len(), f.deleting.len()),
            (0, 0, 0, 0)
        );
        assert!(f.is_clear());
    }

    #[test]
    fn a_running_push_touches_what_it_lists_above_and_below() {
        let mut f = InFlight::default();
        f.claim(&claim("m/new", "m/new", true));
        f.claim(&claim("q/f", "q/f", false));
        for p in ["m/new", "m/new/x/y", "m", "q/f", "q"] {
            assert!(f.touches(p.as_bytes()), "{p}");
        }
        for p in ["m/newer", "q/g", "x", "q/f2"] {
            assert!(!f.touches(p.as_bytes()), "{p}");
        }
        assert!(!f.is_clear());
    }
}
