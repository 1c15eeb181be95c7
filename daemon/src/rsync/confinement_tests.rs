//! A subdirectory's full sync against the real rsync and a local target, with a component of
//! its path a symlink at the source or at the target: nothing outside the root is read,
//! nothing outside the target is written or deleted (canaries beside both).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::{FullProgress, Outcome, Runner};

struct Site {
    dir: tempfile::TempDir,
    runner: Runner,
}

impl Site {
    /// `src/sub/` and `dst/sub/` holding `f`, a secret beside the root (mode 0600) and a
    /// canary directory beside the target.
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for p in ["src/sub", "dst/sub", "secret", "beside"] {
            std::fs::create_dir_all(d.join(p)).unwrap();
        }
        std::fs::write(d.join("src/sub/f"), "f").unwrap();
        std::fs::write(d.join("dst/sub/f"), "f").unwrap();
        std::fs::write(d.join("secret/key"), "secret").unwrap();
        std::fs::set_permissions(d.join("secret/key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(d.join("beside/canary"), "canary").unwrap();
        let runner = Runner::local_for_tests(d);
        Site { dir, runner }
    }

    fn p(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    async fn full_sync_of_sub(&self) -> Outcome {
        let progress = FullProgress::new(self.runner.root.clone());
        self.runner.push_full(b"sub", &progress, None).await.outcome
    }

    /// Nothing beside the root reached the target, nothing beside the target changed.
    fn confined(&self) {
        let found: Vec<_> = walk(&self.p("dst"))
            .into_iter()
            .filter(|p| std::fs::read(p).is_ok_and(|c| c == b"secret"))
            .collect();
        assert!(found.is_empty(), "read outside the root: {found:?}");
        assert_eq!(std::fs::read(self.p("beside/canary")).unwrap(), b"canary");
        assert_eq!(std::fs::read(self.p("secret/key")).unwrap(), b"secret");
    }
}

/// Every path below `dir`, symlinks not followed.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test]
async fn a_subdirectory_replaced_by_a_symlink_at_the_source_is_pushed_as_the_symlink() {
    let s = Site::new();
    std::fs::remove_dir_all(s.p("src/sub")).unwrap();
    symlink("../secret", s.p("src/sub")).unwrap();
    assert_eq!(s.full_sync_of_sub().await, Outcome::Delivered);
    s.confined();
    let at_target = std::fs::symlink_metadata(s.p("dst/sub")).unwrap();
    assert!(at_target.file_type().is_symlink(), "sent as what it is now");
    assert_eq!(
        std::fs::read_link(s.p("dst/sub")).unwrap(),
        Path::new("../secret")
    );
}

#[tokio::test]
async fn a_subdirectory_that_is_a_symlink_at_the_target_is_replaced_not_followed() {
    let s = Site::new();
    std::fs::remove_dir_all(s.p("dst/sub")).unwrap();
    symlink("../beside", s.p("dst/sub")).unwrap();
    assert_eq!(s.full_sync_of_sub().await, Outcome::Delivered);
    s.confined();
    assert!(std::fs::symlink_metadata(s.p("dst/sub")).unwrap().is_dir());
    assert_eq!(std::fs::read(s.p("dst/sub/f")).unwrap(), b"f");
}
