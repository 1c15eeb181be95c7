//! A small tmpfs mounted for a test (full disks), unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs (or bind mount) mounted for a test (root needed); unmounted (lazily) on drop.
pub struct Tmpfs {
    path: PathBuf,
    mounted: bool,
    /// For a bind mount: the directory shown at `path`.
    bind_from: Option<PathBuf>,
}

impl Tmpfs {
    /// Bind-mount the existing directory `from` on the existing directory `path`: unmounting
    /// and binding again gives `path` back the same device and inode.
    pub fn bind(from: &Path, path: &Path) -> Tmpfs {
        let mut m = Tmpfs {
            path: path.to_path_buf(),
            mounted: false,
            bind_from: Some(from.to_path_buf()),
        };
        m.mount_again();
        m
    }

    /// Bind the same directory again after [`Tmpfs::unmount`].
    pub fn mount_again(&mut self) {
        let from = self
            .bind_from
            .as_ref()
            .expect("only a bind mount can be mounted again");
        let st = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount --bind on {} failed (root needed)",
            self.path.display()
        );
        self.mounted = true;
    }

    /// Mount a tmpfs of `size` (e.g. "8m") on the existing directory `path`.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        Self::mount_with(path, &format!("size={size}"))
    }

    /// Mount a tmpfs with mount options `opts` (e.g. "size=2m,ro").
    pub fn mount_with(path: &Path, opts: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs on {} failed (root needed)",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
            mounted: true,
            bind_from: None,
        }
    }

    /// Unmount now, as an administrator would (fails if busy).
    pub fn unmount(&mut self) {
        let st = Command::new("umount")
            .arg(&self.path)
            .status()
            .expect("run umount");
        assert!(st.success(), "umount {} failed", self.path.display());
        self.mounted = false;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
