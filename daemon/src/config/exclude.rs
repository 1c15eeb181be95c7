//! rsync-style exclude patterns, applied to inotify events and passed to every rsync run.
//!
//! The same pattern list is given to rsync as `--exclude=PAT`, so what the watcher ignores and
//! what rsync skips never disagree. Matching follows rsync's rules for the common forms:
//! - a trailing `/` matches directories only;
//! - a leading `/` anchors the pattern at the root;
//! - a pattern with a `/` elsewhere (or `**`) is matched against the end of the whole relative
//!   path, otherwise against the last component;
//! - `*` does not cross `/`, `**` does, `?` and `[...]` as in the shell.
//!
//! A path is excluded when it or any of its ancestors is: rsync never descends into an excluded
//! directory.

use globset::{GlobBuilder, GlobMatcher};

#[derive(Debug, Clone)]
struct Rule {
    matcher: GlobMatcher,
    dir_only: bool,
    whole_path: bool,
}

/// A compiled exclude list.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<String>,
    rules: Vec<Rule>,
}

impl Excludes {
    /// Compile patterns; on error returns the offending pattern and why.
    pub fn new(patterns: &[String]) -> Result<Excludes, (String, String)> {
        let mut rules = Vec::new();
        for pat in patterns {
            if pat.is_empty() {
                return Err((pat.clone(), "empty pattern".into()));
            }
            if pat.starts_with("+ ") || pat.starts_with("- ") || pat.starts_with('!') {
                return Err((
                    pat.clone(),
                    "filter-rule prefixes are not supported; give plain exclude patterns".into(),
                ));
            }
            let dir_only = pat.ends_with('/');
            let body = pat.trim_end_matches('/');
            let anchored = body.starts_with('/');
            let body = body.trim_start_matches('/');
            let whole_path = anchored || body.contains('/') || body.contains("**");
            let glob = if whole_path && !anchored {
                format!("{{{body},**/{body}}}")
            } else {
                body.to_string()
            };
            let matcher = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| (pat.clone(), e.kind().to_string()))?
                .compile_matcher();
            rules.push(Rule {
                matcher,
                dir_only,
                whole_path,
            });
        }
        Ok(Excludes {
            patterns: patterns.to_vec(),
            rules,
        })
    }

    /// The patterns as written, for rsync's `--exclude`.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether every pattern is matched against a path's last component alone, so that it
    /// means the same in a transfer of any subdirectory (a move's push): an anchored pattern,
    /// or one with a `/` inside, would be read from that subdirectory instead of the root.
    pub fn same_in_every_subtree(&self) -> bool {
        self.rules.iter().all(|r| !r.whole_path)
    }

    /// A hash of the patterns in their order: what the index remembers it was walked with, so a
    /// changed list is noticed (a path it newly includes was never pushed).
    pub fn digest(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in &self.patterns {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        h.digest()
    }

    /// Whether `rel` (relative to the root, no leading `/`) itself matches, given whether it is a
    /// directory. Ancestors are not checked: see [`Excludes::excludes_path`].
    pub fn matches(&self, rel: &[u8], is_dir: bool) -> bool {
        if self.rules.is_empty() || rel.is_empty() {
            return false;
        }
        let path = bytes_to_path(rel);
        let base = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
        let base = bytes_to_path(base);
        self.rules.iter().any(|r| {
            (!r.dir_only || is_dir)
                && if r.whole_path {
                    r.matcher.is_match(path)
                } else {
                    r.matcher.is_match(base)
                }
        })
    }

    /// Whether `rel` or any of its ancestor directories is excluded.
    pub fn excludes_path(&self, rel: &[u8], is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        for (i, b) in rel.iter().enumerate() {
            if *b == b'/' && self.matches(&rel[..i], true) {
                return true;
            }
        }
        self.matches(rel, is_dir)
    }
}

fn bytes_to_path(b: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn basename_patterns_match_at_any_depth() {
        let e = ex(&["*.swp"]);
        assert!(e.excludes_path(b"a.swp", false));
        assert!(e.excludes_path(b"d/e/a.swp", false));
        assert!(!e.excludes_path(b"a.swpx", false));
    }

    #[test]
    fn dir_only_pattern_excludes_contents() {
        let e = ex(&[".cache/"]);
        assert!(e.excludes_path(b".cache", true));
        assert!(!e.excludes_path(b".cache", false));
        assert!(e.excludes_path(b"x/.cache/y/z", false));
    }

    #[test]
    fn anchored_and_slashed_patterns() {
        let e = ex(&["/top", "sub/*.log"]);
        assert!(e.excludes_path(b"top", false));
        assert!(!e.excludes_path(b"a/top", false));
        assert!(e.excludes_path(b"sub/x.log", false));
        assert!(e.excludes_path(b"a/sub/x.log", false));
        assert!(!e.excludes_path(b"sub/d/x.log", false));
    }

    #[test]
    fn only_last_component_patterns_mean_the_same_in_every_subtree() {
        assert!(ex(&[]).same_in_every_subtree());
        assert!(ex(&["*.swp", ".cache/"]).same_in_every_subtree());
        for p in ["/top", "sub/*.log", "**.o"] {
            assert!(!ex(&["*.swp", p]).same_in_every_subtree(), "{p}");
        }
    }

    #[test]
    fn the_digest_tells_lists_apart_by_pattern_and_order() {
        let d = |p: &[&str]| ex(p).digest();
        assert_eq!(d(&["a", "b"]), d(&["a", "b"]));
        assert_ne!(d(&["a", "b"]), d(&["b", "a"]));
        assert_ne!(d(&["ab"]), d(&["a", "b"]));
        assert_ne!(d(&[]), d(&["a"]));
    }

    #[test]
    fn non_utf8_names_are_matched_as_bytes() {
        let e = ex(&["*.tmp"]);
        assert!(e.excludes_path(b"bad\xff.tmp", false));
    }
}
