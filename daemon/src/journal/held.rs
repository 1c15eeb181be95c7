//! Deletions held by a root's `delete_guard` (tree `held`): `target_id 0x00 path` → the
//! [`Entry`] the path had pending, moved here by [`Journal::hold`] and back by
//! [`Journal::release_deletes`]. While a target has held paths, every new deletion of it is held
//! too (the dispatcher asks [`Journal::has_held`]). A held path that changes again at the source
//! leaves `held` for `pending` ([`Journal::record`]): created again, it is an ordinary update.
//!
//! A full sync (`--delete`) cannot hold paths one by one: it runs with `--max-delete` at what
//! the guard has left, and what rsync skipped beyond it is recorded in `meta` as
//! `held_full 0x00 target_id 0x00 subpath` → how many. A release turns it into
//! `released_full 0x00 target_id 0x00 subpath` and a full sync owed there, which then runs
//! unguarded.
//!
//! A release records in `meta` (`released 0x00 target_id`) a generation above every entry it
//! moved back: deletions of an older generation were released and go unguarded (with them any
//! deletion recorded before the release and not yet judged: the operator released what waited),
//! newer ones are judged again.
//!
//! The deletions a target took within the guard's window are kept in `meta` too
//! (`guard_taken 0x00 target_id` → (Unix ms, entries) per second, oldest first): a restart
//! does not hand out the guard a second time within the window.

use bincode::Options;

use super::{key, list_where, move_entries, opts, prefix, Item, Journal, JournalError, Trees};

fn released_key(target: &str) -> Vec<u8> {
    let mut k = b"released\0".to_vec();
    k.extend_from_slice(target.as_bytes());
    k
}

fn full_key(kind: &[u8], target: &str, sub: &[u8]) -> Vec<u8> {
    let mut k = kind.to_vec();
    k.push(0);
    k.extend_from_slice(&key(target, sub));
    k
}

fn taken_key(target: &str) -> Vec<u8> {
    let mut k = b"guard_taken\0".to_vec();
    k.extend_from_slice(target.as_bytes());
    k
}

/// Deletions taken at one time: (Unix ms, entries).
pub type Taken = (u64, u64);

const HELD_FULL: &[u8] = b"held_full";
const RELEASED_FULL: &[u8] = b"released_full";

/// A target's held deletions, as [`Journal::list_held`] lists them.
pub struct HeldList {
    /// Held paths, up to the limit asked for.
    pub paths: Vec<Vec<u8>>,
    /// How many paths are held.
    pub total: u64,
    /// What full syncs left undeleted: (subpath, how many).
    pub full: Vec<(Vec<u8>, u64)>,
}

impl Trees {
    /// The full syncs' held deletions of `target`: (subpath, how many).
    fn held_full(&self, target: &str) -> Result<Vec<(Vec<u8>, u64)>, JournalError> {
        let pfx = full_key(HELD_FULL, target, b"");
        let mut out = Vec::new();
        for kv in self.meta.scan_prefix(&pfx) {
            let (k, v) = kv?;
            out.push((k[pfx.len()..].to_vec(), opts().deserialize(&v)?));
        }
        Ok(out)
    }

    /// Without a transaction (one per path cost more than the rest of a mass deletion): the
    /// entry is written to `held` first, then taken from `pending` if unchanged, else taken
    /// back. A crash in between leaves it in both, and the next take holds it again.
    fn hold(&self, target: &str, items: &[Item]) -> Result<u64, JournalError> {
        let mut n = 0;
        for it in items {
            let k = key(target, &it.path);
            self.held.insert(k.as_slice(), it.raw.clone())?;
            let taken = self.pending.compare_and_swap(
                k.as_slice(),
                Some(&it.raw),
                None as Option<&[u8]>,
            )?;
            match taken {
                Ok(()) => n += 1,
                Err(_) => {
                    self.held.remove(k.as_slice())?;
                }
            }
        }
        Ok(n)
    }

    fn release_deletes(&self, target: &str) -> Result<u64, JournalError> {
        // Above every generation recorded so far, so above every entry moved back.
        let mark = self.db.generate_id()?;
        self.meta
            .insert(released_key(target), opts().serialize(&mark)?)?;
        let mut n = move_entries(&self.held, &self.pending, target, |e| e.next_attempt_ms = 0)?;
        for (sub, skipped) in self.held_full(target)? {
            self.meta
                .insert(full_key(RELEASED_FULL, target, &sub), &[1u8])?;
            self.request_resync(target, &sub)?;
            self.meta.remove(full_key(HELD_FULL, target, &sub))?;
            n += skipped;
        }
        Ok(n)
    }

    /// What `target` took within the `window_ms` before `now_ms`, oldest first.
    fn deletions_taken(
        &self,
        target: &str,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<Taken>, JournalError> {
        let mut taken: Vec<Taken> = match self.meta.get(taken_key(target))? {
            Some(v) => opts().deserialize(&v)?,
            None => Vec::new(),
        };
        taken.retain(|(at, _)| now_ms.saturating_sub(*at) < window_ms);
        Ok(taken)
    }

    fn released_mark(&self, target: &str) -> Result<u64, JournalError> {
        Ok(match self.meta.get(released_key(target))? {
            Some(v) => opts().deserialize(&v)?,
            None => 0,
        })
    }
}

impl Journal {
    /// Hold these deletions of `target` (taken from pending for a push): each one whose entry
    /// did not change since it was read moves to `held`. Returns how many did.
    pub fn hold(&self, target: &str, items: &[Item]) -> Result<u64, JournalError> {
        self.write(|t| t.hold(target, items))
    }

    /// Move every held deletion of `target` back to pending, released: see the module.
    /// Returns how many.
    pub fn release_deletes(&self, target: &str) -> Result<u64, JournalError> {
        self.write(|t| t.release_deletes(target))
    }

    /// Whether `target` has held deletions (cheap: looks at a key or two).
    pub fn has_held(&self, target: &str) -> Result<bool, JournalError> {
        self.with(|t| {
            let paths = t.held.scan_prefix(prefix(target)).next().transpose()?;
            let full = t.meta.scan_prefix(full_key(HELD_FULL, target, b"")).next();
            Ok(paths.is_some() || full.transpose()?.is_some())
        })
    }

    /// How many deletions of `target` are held.
    pub fn held_count(&self, target: &str) -> Result<u64, JournalError> {
        self.with(|t| {
            let mut n = 0;
            for kv in t.held.scan_prefix(prefix(target)) {
                kv?;
                n += 1;
            }
            Ok(n + t.held_full(target)?.iter().map(|h| h.1).sum::<u64>())
        })
    }

    /// Held deletions of `target`: at most `limit` paths.
    pub fn list_held(&self, target: &str, limit: usize) -> Result<HeldList, JournalError> {
        self.with(|t| {
            let (paths, total) = list_where(&t.held, target, limit, |_| true)?;
            Ok(HeldList {
                paths: paths.into_iter().map(|(p, _)| p).collect(),
                total,
                full: t.held_full(target)?,
            })
        })
    }

    /// A guarded full sync of `sub` left `skipped` deletions undone at the guard's limit: they
    /// are what it holds now (0: nothing).
    pub fn hold_full(&self, target: &str, sub: &[u8], skipped: u64) -> Result<(), JournalError> {
        self.write(|t| {
            let k = full_key(HELD_FULL, target, sub);
            match skipped {
                0 => t.meta.remove(k)?,
                n => t.meta.insert(k, opts().serialize(&n)?)?,
            };
            Ok(())
        })
    }

    /// Whether the full sync owed to `sub` was released (it runs unguarded).
    pub fn full_released(&self, target: &str, sub: &[u8]) -> Result<bool, JournalError> {
        self.with(|t| Ok(t.meta.get(full_key(RELEASED_FULL, target, sub))?.is_some()))
    }

    /// The released full sync of `sub` ran.
    pub fn full_release_done(&self, target: &str, sub: &[u8]) -> Result<(), JournalError> {
        self.write(|t| {
            t.meta.remove(full_key(RELEASED_FULL, target, sub))?;
            Ok(())
        })
    }

    /// The deletions `target` took within the last `window_ms` before `now_ms`, oldest first.
    pub fn deletions_taken(
        &self,
        target: &str,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<Taken>, JournalError> {
        self.with(|t| t.deletions_taken(target, now_ms, window_ms))
    }

    /// `target` took deletions of `entries` entries at `at_ms`: kept (added up per second) with
    /// those taken within the `window_ms` before it.
    pub fn took_deletions(
        &self,
        target: &str,
        entries: u64,
        at_ms: u64,
        window_ms: u64,
    ) -> Result<(), JournalError> {
        self.write(|t| {
            let mut taken = t.deletions_taken(target, at_ms, window_ms)?;
            match taken.last_mut() {
                Some(last) if last.0 / 1000 == at_ms / 1000 => last.1 += entries,
                _ => taken.push((at_ms, entries)),
            }
            t.meta
                .insert(taken_key(target), opts().serialize(&taken)?)?;
            Ok(())
        })
    }

    /// The generation below which pending deletions of `target` were released by `syncctl
    /// release-deletes` (they go unguarded); 0 before any release.
    pub fn released_mark(&self, target: &str) -> Result<u64, JournalError> {
        self.with(|t| t.released_mark(target))
    }
}

#[cfg(test)]
mod tests {
    use super::super::now_ms;
    use super::super::tests::open;

    const T: &str = "root/t1";

    fn due(j: &super::Journal) -> Vec<super::Item> {
        j.due(T, now_ms(), 100, &mut |_| false).unwrap().0
    }

    #[test]
    fn held_deletions_wait_outside_pending_across_a_reopen_and_go_released() {
        let (d, j) = open();
        j.record(
            &[T.into(), "root/t2".into()],
            &[b"a".to_vec(), b"b".to_vec()],
        )
        .unwrap();
        let items = due(&j);
        assert_eq!(j.hold(T, &items).unwrap(), 2);
        assert!(due(&j).is_empty(), "held paths are not pending");
        assert_eq!(j.held_count(T).unwrap(), 2);
        assert!(j.has_held(T).unwrap() && !j.has_held("root/t2").unwrap());
        drop(j);
        let j = super::Journal::open(&d.path().join("j")).unwrap();
        assert_eq!(j.held_count(T).unwrap(), 2, "a restart keeps them held");
        assert_eq!(j.release_deletes(T).unwrap(), 2);
        // Recorded after the release: it does not vouch for this one.
        j.record(&[T.into()], &[b"c".to_vec()]).unwrap();
        assert!(!j.has_held(T).unwrap());
        let back = due(&j);
        let released: Vec<_> = back
            .iter()
            .filter(|i| i.entry.generation < j.released_mark(T).unwrap())
            .map(|i| i.path.clone())
            .collect();
        assert_eq!(released, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn a_held_path_changed_again_is_pending_and_a_changed_one_is_not_held() {
        let (_d, j) = open();
        j.record(&[T.into()], &[b"a".to_vec(), b"b".to_vec()])
            .unwrap();
        let items = due(&j);
        // `b` changes between the read and the hold: it stays pending, as it is now.
        j.record(&[T.into()], &[b"b".to_vec()]).unwrap();
        assert_eq!(j.hold(T, &items).unwrap(), 1);
        // `a` is created again at the source: an ordinary update, no longer held.
        j.record(&[T.into()], &[b"a".to_vec()]).unwrap();
        assert_eq!(j.held_count(T).unwrap(), 0);
        let back = due(&j);
        assert_eq!(back.len(), 2);
        assert_eq!(j.released_mark(T).unwrap(), 0);
    }

    #[test]
    fn the_deletions_taken_within_the_window_are_kept_per_second_across_a_reopen() {
        let (d, j) = open();
        let w = 60_000;
        j.took_deletions(T, 5, 1_000_100, w).unwrap();
        j.took_deletions(T, 7, 1_000_900, w).unwrap();
        j.took_deletions(T, 3, 1_030_000, w).unwrap();
        j.took_deletions("root/t2", 1, 1_030_000, w).unwrap();
        drop(j);
        let j = super::Journal::open(&d.path().join("j")).unwrap();
        assert_eq!(
            j.deletions_taken(T, 1_030_500, w).unwrap(),
            vec![(1_000_100, 12), (1_030_000, 3)],
            "one entry per second, kept across a restart"
        );
        assert_eq!(
            j.deletions_taken(T, 1_060_100, w).unwrap(),
            vec![(1_030_000, 3)],
            "out of the window"
        );
        j.took_deletions(T, 2, 1_095_000, w).unwrap();
        assert_eq!(
            j.deletions_taken(T, 1_095_000, w).unwrap(),
            vec![(1_095_000, 2)]
        );
    }
}
