//! A paused clone's RAM as only what differs from its template.
//!
//! QEMU writes the RAM of a migration with `mapped-ram` at fixed offsets in
//! the file: each RAM block has a header (big-endian: version `u32`, page
//! size `u64`, bitmap offset `u64`, pages offset `u64`), a bitmap of the
//! pages present in the file, and the pages at `pages offset + page index ×
//! page size`. Loading reads only the pages whose bit is set; the others
//! stay as the destination's RAM has them. A clone's RAM is its template's
//! RAM file mapped copy-on-write, so a page equal to the template's page
//! need not be in the file: its bit is cleared and its bytes become a hole.
//! What a paused clone keeps on disk is then what it changed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Result, VmmError};

/// The mapped-ram header version QEMU writes.
const HEADER_VERSION: u32 = 1;
/// version (4) + page size, bitmap offset, pages offset (8 each), packed.
const HEADER_BYTES: u64 = 28;
/// QEMU aligns each block's pages to this.
const PAGES_ALIGNMENT: u64 = 1 << 20;
/// How much of the file's start is searched for the block's header (the
/// device state before RAM is small; the headers come first).
const HEADER_SEARCH_BYTES: u64 = 1 << 20;
/// Pages compared per read.
const PAGES_PER_READ: u64 = 512;

/// Where one RAM block's pages are in a mapped-ram migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedBlock {
    pub page_size: u64,
    pub pages: u64,
    pub bitmap_offset: u64,
    pub pages_offset: u64,
}

/// What [`keep_only_changes`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Pages in the file before (their bit set).
    pub present: u64,
    /// Pages kept: they differ from the template's.
    pub kept: u64,
}

fn invalid(path: &Path, what: &str) -> VmmError {
    VmmError::MemorySnapshot {
        path: path.to_owned(),
        reason: what.to_owned(),
    }
}

/// Finds RAM block `block` (of `length` bytes) in the mapped-ram migration
/// file `file`: its id and length as QEMU writes them (a length byte, the
/// id, the length as a big-endian `u64`), then its header, which must agree
/// with where it is (the bitmap right after it, the pages after the bitmap,
/// aligned).
pub fn find_block(file: &mut File, path: &Path, block: &str, length: u64) -> Result<MappedBlock> {
    let id_len = u8::try_from(block.len()).map_err(|_| invalid(path, "RAM block id too long"))?;
    let mut marker = vec![id_len];
    marker.extend_from_slice(block.as_bytes());
    marker.extend_from_slice(&length.to_be_bytes());
    let mut head = Vec::new();
    file.seek(SeekFrom::Start(0))
        .map_err(VmmError::io("reading", path))?;
    Read::by_ref(file)
        .take(HEADER_SEARCH_BYTES)
        .read_to_end(&mut head)
        .map_err(VmmError::io("reading", path))?;
    let mut from = 0;
    while let Some(found) = head[from..]
        .windows(marker.len())
        .position(|w| w == marker.as_slice())
    {
        let at = from + found + marker.len();
        if let Some(block) = header_at(&head, at, length) {
            return Ok(block);
        }
        from += found + 1;
    }
    Err(invalid(
        path,
        &format!("no mapped-ram header for RAM block {block}"),
    ))
}

/// The header at `at` in `head`, if it is one for a block of `length`
/// bytes written there.
fn header_at(head: &[u8], at: usize, length: u64) -> Option<MappedBlock> {
    let bytes = head.get(at..at + usize::try_from(HEADER_BYTES).ok()?)?;
    let version = u32::from_be_bytes(bytes[0..4].try_into().ok()?);
    let word =
        |i: usize| -> Option<u64> { Some(u64::from_be_bytes(bytes[i..i + 8].try_into().ok()?)) };
    let (page_size, bitmap_offset, pages_offset) = (word(4)?, word(12)?, word(20)?);
    if version != HEADER_VERSION || page_size == 0 || !page_size.is_power_of_two() {
        return None;
    }
    let pages = length / page_size;
    // QEMU's bitmap is an array of longs.
    let bitmap_bytes = pages.div_ceil(64) * 8;
    let expected_pages_offset = (bitmap_offset + bitmap_bytes).next_multiple_of(PAGES_ALIGNMENT);
    (bitmap_offset == at as u64 + HEADER_BYTES && pages_offset == expected_pages_offset).then_some(
        MappedBlock {
            page_size,
            pages,
            bitmap_offset,
            pages_offset,
        },
    )
}

/// Keeps in the migration file `snapshot` only the pages of RAM block
/// `block` that differ from `template` (the RAM file the clone maps): the
/// others lose their bit and become holes.
pub fn keep_only_changes(
    snapshot: &Path,
    template: &Path,
    block: &str,
    length: u64,
) -> Result<DiffStats> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(snapshot)
        .map_err(VmmError::io("opening", snapshot))?;
    let template_file = File::open(template).map_err(VmmError::io("opening", template))?;
    let mapped = find_block(&mut file, snapshot, block, length)?;
    let bitmap_len = usize::try_from(mapped.pages.div_ceil(64) * 8)
        .map_err(|_| invalid(snapshot, "bitmap too large"))?;
    let mut bitmap = vec![0u8; bitmap_len];
    file.read_exact_at(&mut bitmap, mapped.bitmap_offset)
        .map_err(VmmError::io("reading", snapshot))?;
    let chunk = usize::try_from(mapped.page_size * PAGES_PER_READ)
        .map_err(|_| invalid(snapshot, "page size too large"))?;
    let (mut ours, mut theirs) = (vec![0u8; chunk], vec![0u8; chunk]);
    let page = usize::try_from(mapped.page_size).map_err(|_| invalid(snapshot, "page size"))?;
    let mut stats = DiffStats::default();
    let mut first = 0;
    while first < mapped.pages {
        let count = PAGES_PER_READ.min(mapped.pages - first);
        let bytes = usize::try_from(count * mapped.page_size)
            .map_err(|_| invalid(snapshot, "page run too large"))?;
        let offset = first * mapped.page_size;
        file.read_exact_at(&mut ours[..bytes], mapped.pages_offset + offset)
            .map_err(VmmError::io("reading", snapshot))?;
        read_or_zeros(&template_file, template, &mut theirs[..bytes], offset)?;
        // A run of pages that go, punched as one hole.
        let mut hole: Option<(u64, u64)> = None;
        for i in 0..count {
            let index = first + i;
            let (byte, bit) = (usize::try_from(index / 8).unwrap_or(usize::MAX), index % 8);
            let present = bitmap.get(byte).is_some_and(|b| b & (1 << bit) != 0);
            let start = usize::try_from(i).unwrap_or(usize::MAX) * page;
            let same = present && ours[start..start + page] == theirs[start..start + page];
            if present {
                stats.present += 1;
            }
            if same {
                if let Some(b) = bitmap.get_mut(byte) {
                    *b &= !(1 << bit);
                }
                hole = Some(hole.map_or((index, 1), |(at, n)| (at, n + 1)));
            } else {
                if present {
                    stats.kept += 1;
                }
                if let Some((at, n)) = hole.take() {
                    punch(&file, snapshot, &mapped, at, n)?;
                }
            }
        }
        if let Some((at, n)) = hole {
            punch(&file, snapshot, &mapped, at, n)?;
        }
        first += count;
    }
    file.write_all_at(&bitmap, mapped.bitmap_offset)
        .map_err(VmmError::io("writing", snapshot))?;
    file.flush().map_err(VmmError::io("writing", snapshot))?;
    file.sync_all().map_err(VmmError::io("syncing", snapshot))?;
    Ok(stats)
}

/// Reads `buffer.len()` bytes at `offset`; past the file's end, zeros (a
/// RAM file may be shorter than the RAM it backs).
fn read_or_zeros(file: &File, path: &Path, buffer: &mut [u8], offset: u64) -> Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file
            .read_at(&mut buffer[filled..], offset + filled as u64)
            .map_err(VmmError::io("reading", path))?;
        if read == 0 {
            buffer[filled..].fill(0);
            break;
        }
        filled += read;
    }
    Ok(())
}

/// Makes `count` pages from page `first` a hole (the file keeps its size).
fn punch(file: &File, path: &Path, block: &MappedBlock, first: u64, count: u64) -> Result<()> {
    let offset = block.pages_offset + first * block.page_size;
    let length = count * block.page_size;
    let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
        return Err(invalid(path, "offset too large"));
    };
    nix::fcntl::fallocate(
        file,
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset,
        length,
    )
    .map_err(|errno| VmmError::io("punching a hole in", path)(std::io::Error::from(errno)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    /// A mapped-ram file with one block `ram0` of `pages` pages, every bit
    /// set, page `i` filled with `fill(i)`; some bytes of device state
    /// before, as QEMU writes.
    fn snapshot_file(
        dir: &Path,
        pages: u64,
        fill: impl Fn(u64) -> u8,
    ) -> std::io::Result<std::path::PathBuf> {
        let path = dir.join("snapshot");
        let mut head = b"QEVM\0\0\0\x03some device state".to_vec();
        head.push(4);
        head.extend_from_slice(b"ram0");
        head.extend_from_slice(&(pages * PAGE).to_be_bytes());
        let bitmap_offset = head.len() as u64 + HEADER_BYTES;
        let bitmap_bytes = pages.div_ceil(64) * 8;
        let pages_offset = (bitmap_offset + bitmap_bytes).next_multiple_of(PAGES_ALIGNMENT);
        head.extend_from_slice(&HEADER_VERSION.to_be_bytes());
        head.extend_from_slice(&PAGE.to_be_bytes());
        head.extend_from_slice(&bitmap_offset.to_be_bytes());
        head.extend_from_slice(&pages_offset.to_be_bytes());
        let file = File::create(&path)?;
        file.write_all_at(&head, 0)?;
        let mut bitmap = vec![0u8; usize::try_from(bitmap_bytes).unwrap_or(0)];
        for i in 0..pages {
            bitmap[usize::try_from(i / 8).unwrap_or(0)] |= 1 << (i % 8);
            let bytes = vec![fill(i); usize::try_from(PAGE).unwrap_or(0)];
            file.write_all_at(&bytes, pages_offset + i * PAGE)?;
        }
        file.write_all_at(&bitmap, bitmap_offset)?;
        Ok(path)
    }

    #[test]
    fn only_pages_that_differ_from_the_template_stay() -> Result<()> {
        let dir = tempfile::tempdir().map_err(VmmError::io("creating", Path::new("/tmp")))?;
        let pages = 1100; // more than one read, not a multiple of 64
        // The template: page i holds i % 7; its file ends early (zeros).
        let template = dir.path().join("memory.ram");
        let template_bytes: Vec<u8> = (0..1000u64)
            .flat_map(|i| vec![(i % 7) as u8; PAGE as usize])
            .collect();
        std::fs::write(&template, &template_bytes).map_err(VmmError::io("writing", &template))?;
        // The clone changed every 10th page; pages past the template's end
        // are zero in both.
        let changed = |i: u64| i % 10 == 3;
        let path = snapshot_file(dir.path(), pages, |i| {
            if changed(i) {
                0xAB
            } else if i < 1000 {
                (i % 7) as u8
            } else {
                0
            }
        })
        .map_err(VmmError::io("writing", dir.path()))?;
        let stats = keep_only_changes(&path, &template, "ram0", pages * PAGE)?;
        let expected_kept = (0..pages).filter(|i| changed(*i)).count() as u64;
        assert_eq!(
            stats,
            DiffStats {
                present: pages,
                kept: expected_kept
            }
        );
        // The bitmap has exactly the changed pages; their bytes are intact,
        // the rest read as zeros (holes) and take no space.
        let mut file = File::open(&path).map_err(VmmError::io("opening", &path))?;
        let block = find_block(&mut file, &path, "ram0", pages * PAGE)?;
        let mut bitmap = vec![0u8; (pages.div_ceil(64) * 8) as usize];
        file.read_exact_at(&mut bitmap, block.bitmap_offset)
            .map_err(VmmError::io("reading", &path))?;
        for i in 0..pages {
            let set = bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0;
            assert_eq!(set, changed(i), "page {i}");
            let mut byte = [0u8; 1];
            file.read_exact_at(&mut byte, block.pages_offset + i * PAGE + 100)
                .map_err(VmmError::io("reading", &path))?;
            assert_eq!(byte[0], if changed(i) { 0xAB } else { 0 }, "page {i}");
        }
        use std::os::unix::fs::MetadataExt;
        let used = std::fs::metadata(&path)
            .map_err(VmmError::io("stat", &path))?
            .blocks()
            * 512;
        assert!(used < (expected_kept + 300) * PAGE, "{used} bytes used");
        Ok(())
    }

    #[test]
    fn a_file_without_the_block_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(VmmError::io("creating", Path::new("/tmp")))?;
        let path =
            snapshot_file(dir.path(), 64, |_| 1).map_err(VmmError::io("writing", dir.path()))?;
        let mut file = File::open(&path).map_err(VmmError::io("opening", &path))?;
        assert!(find_block(&mut file, &path, "ram1", 64 * PAGE).is_err());
        // The right id with the wrong length is not it either.
        assert!(find_block(&mut file, &path, "ram0", 65 * PAGE).is_err());
        assert_eq!(find_block(&mut file, &path, "ram0", 64 * PAGE)?.pages, 64);
        Ok(())
    }
}
