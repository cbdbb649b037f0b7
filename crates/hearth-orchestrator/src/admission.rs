//! What a node admits: memory by what its sandboxes have committed, not by
//! what the host happens to have free at the moment, and disk by what is
//! free in the data directory.
//!
//! A clone's RAM is a copy-on-write view of its template, so a new clone
//! costs little at first; but every guest may dirty all of its RAM later,
//! and a free-memory snapshot taken now admits creates the host cannot
//! hold then. So each sandbox, running or starting, commits its guest RAM
//! plus a per-VM overhead (QEMU itself, its TCG translation cache, page
//! tables), and a create is admitted only while the commitments fit the
//! host's memory minus a reserve for the host, times an overcommit ratio
//! the operator chooses for density.

use std::path::Path;

/// The memory a node gives its sandboxes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryBudget {
    /// The host's memory (MemTotal).
    pub host_total_mib: u64,
    /// Kept for the host, the node and everything else.
    pub reserve_mib: u64,
    /// What each VM costs beyond its guest RAM.
    pub per_vm_overhead_mib: u64,
    /// Commitments may reach this multiple of what is left after the
    /// reserve: 1.0 never overcommits, 2.0 counts on half the guest RAM
    /// staying untouched or shared.
    pub overcommit: f64,
}

/// Why a create or a build was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "not enough memory: sandboxes have committed {committed_mib} MiB of the node's \
         {budget_mib} MiB and this one needs {needed_mib} MiB more"
    )]
    Memory {
        committed_mib: u64,
        needed_mib: u64,
        budget_mib: u64,
    },
    #[error("not enough disk: {free_mib} MiB free in {path}, {min_free_mib} MiB must stay free")]
    Disk {
        path: String,
        free_mib: u64,
        min_free_mib: u64,
    },
    #[error("the free space of {path} cannot be read: {reason}")]
    DiskUnknown { path: String, reason: String },
}

impl MemoryBudget {
    /// The ratio actually applied: a ratio that is not a positive number
    /// (a configuration mistake) never admits more than the host has.
    fn ratio(&self) -> f64 {
        if self.overcommit.is_finite() && self.overcommit > 0.0 {
            self.overcommit
        } else {
            1.0
        }
    }

    /// What sandboxes may commit in all, in MiB.
    pub fn budget_mib(&self) -> u64 {
        let left = self.host_total_mib.saturating_sub(self.reserve_mib);
        // Far below f64's exact range for any real host; the cast
        // saturates rather than wraps if it ever were not.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let budget = (left as f64 * self.ratio()) as u64;
        budget
    }

    /// What one sandbox with `guest_mib` of RAM commits.
    pub fn commitment_mib(&self, guest_mib: u64) -> u64 {
        guest_mib.saturating_add(self.per_vm_overhead_mib)
    }

    /// What the sandboxes with these guest RAM sizes commit together.
    pub fn committed_mib(&self, guests_mib: impl IntoIterator<Item = u64>) -> u64 {
        guests_mib.into_iter().fold(0, |sum, guest| {
            sum.saturating_add(self.commitment_mib(guest))
        })
    }

    /// Whether one more sandbox of `guest_mib` fits beside `committed_mib`.
    pub fn admit(&self, committed_mib: u64, guest_mib: u64) -> Result<(), Refusal> {
        let needed_mib = self.commitment_mib(guest_mib);
        let budget_mib = self.budget_mib();
        if committed_mib.saturating_add(needed_mib) <= budget_mib {
            Ok(())
        } else {
            Err(Refusal::Memory {
                committed_mib,
                needed_mib,
                budget_mib,
            })
        }
    }
}

/// Free space for unprivileged users of the filesystem holding `path`, in
/// MiB.
pub fn free_disk_mib(path: &Path) -> Result<u64, Refusal> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|e| Refusal::DiskUnknown {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    Ok(free >> 20)
}

/// Whether the filesystem holding `path` has at least `min_free_mib` free:
/// checked before a create (its overlay grows as the guest writes) and
/// before a build (layers and a snapshot are written).
pub fn disk_allows(path: &Path, min_free_mib: u64) -> Result<(), Refusal> {
    let free_mib = free_disk_mib(path)?;
    if free_mib >= min_free_mib {
        Ok(())
    } else {
        Err(Refusal::Disk {
            path: path.display().to_string(),
            free_mib,
            min_free_mib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: u64, reserve: u64, overhead: u64, overcommit: f64) -> MemoryBudget {
        MemoryBudget {
            host_total_mib: total,
            reserve_mib: reserve,
            per_vm_overhead_mib: overhead,
            overcommit,
        }
    }

    #[test]
    fn commitments_count_guest_ram_plus_overhead() {
        let b = budget(8192, 1024, 64, 1.0);
        assert_eq!(b.commitment_mib(512), 576);
        assert_eq!(b.committed_mib([512, 1024, 512]), 576 + 1088 + 576);
        assert_eq!(b.committed_mib([]), 0);
    }

    #[test]
    fn creates_are_admitted_until_the_commitments_fill_the_budget() {
        // 8 GiB host, 1 GiB reserved: 7168 MiB for sandboxes of 512 + 64.
        let b = budget(8192, 1024, 64, 1.0);
        assert_eq!(b.budget_mib(), 7168);
        let mut running = Vec::new();
        while b
            .admit(b.committed_mib(running.iter().copied()), 512)
            .is_ok()
        {
            running.push(512);
        }
        // 12 × 576 = 6912 fits, a 13th (7488) does not.
        assert_eq!(running.len(), 12);
        assert_eq!(
            b.admit(6912, 512),
            Err(Refusal::Memory {
                committed_mib: 6912,
                needed_mib: 576,
                budget_mib: 7168
            })
        );
        // Exactly full is still admitted.
        assert!(b.admit(7168 - 576, 512).is_ok());
    }

    #[test]
    fn overcommit_scales_the_budget() {
        assert_eq!(budget(8192, 1024, 64, 2.0).budget_mib(), 14336);
        assert_eq!(budget(8192, 1024, 64, 0.5).budget_mib(), 3584);
        // Nonsense ratios never admit more than the host has.
        for ratio in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(budget(8192, 1024, 64, ratio).budget_mib(), 7168);
        }
    }

    #[test]
    fn extreme_figures_saturate_instead_of_overflowing() {
        // A reserve above the host's memory leaves nothing.
        let none = budget(4096, u64::MAX, 64, 1.0);
        assert_eq!(none.budget_mib(), 0);
        assert!(none.admit(0, 128).is_err());
        // Huge commitments and sizes neither wrap nor panic.
        let b = budget(u64::MAX, 0, u64::MAX, f64::MAX);
        assert_eq!(b.commitment_mib(u64::MAX), u64::MAX);
        assert_eq!(b.committed_mib([u64::MAX, u64::MAX]), u64::MAX);
        assert_eq!(b.budget_mib(), u64::MAX);
        assert!(b.admit(u64::MAX, u64::MAX).is_ok());
        assert!(budget(1024, 0, 0, 1.0).admit(u64::MAX, 1).is_err());
    }

    #[test]
    fn free_disk_is_read_and_compared() -> Result<(), Refusal> {
        let here = std::env::temp_dir();
        let free = free_disk_mib(&here)?;
        assert!(disk_allows(&here, 0).is_ok());
        assert!(matches!(
            disk_allows(&here, free.saturating_add(1 << 30)),
            Err(Refusal::Disk { .. })
        ));
        assert!(matches!(
            disk_allows(Path::new("/no/such/dir"), 0),
            Err(Refusal::DiskUnknown { .. })
        ));
        Ok(())
    }
}
