//! Limits of a multipart `/files` upload. Each bounds something a client
//! could otherwise grow without end: the disk one part fills, the files one
//! request touches, and the memory the parser holds while it looks for the
//! end of a part's headers.

/// Largest file one part may carry. Above any sandbox disk hearth makes, so
/// it only stops a runaway client; the disk filling up stops it earlier.
pub const DEFAULT_MAX_PART_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Most parts (files) in one upload: `write_files` of a large tree stays
/// well below it.
pub const DEFAULT_MAX_PARTS: usize = 10_000;
/// Longest header block of one part: a `Content-Disposition` naming a path
/// of `PATH_MAX` bytes, percent-encoded, fits with room to spare.
pub const DEFAULT_MAX_PART_HEADER_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    pub max_part_bytes: u64,
    pub max_parts: usize,
    pub max_part_header_bytes: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_part_bytes: DEFAULT_MAX_PART_BYTES,
            max_parts: DEFAULT_MAX_PARTS,
            max_part_header_bytes: DEFAULT_MAX_PART_HEADER_BYTES,
        }
    }
}
