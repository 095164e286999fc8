//! gzip for `/metrics` with one reused compressor.
//!
//! `flate2::write::GzEncoder` allocates and zeroes the compressor's tables (hundreds of KiB) for
//! every response, which was most of a scrape's CPU time. A raw deflate stream from a kept
//! `Compress`, framed with the gzip header and trailer (RFC 1952), costs only the compression.

use std::io;
use std::sync::{Mutex, PoisonError};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// gzip member header: magic, deflate, no flags, no mtime, no extra flags, OS "unknown".
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

#[derive(Debug)]
pub(super) struct Gzip {
    compress: Mutex<Compress>,
}

impl Gzip {
    pub(super) fn new() -> Self {
        // Fast level: the body is small and the Pi's CPU is the scarce resource.
        Self {
            compress: Mutex::new(Compress::new(Compression::fast(), false)),
        }
    }

    /// Compresses `data` into one gzip member.
    pub(super) fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut compress = self.compress.lock().unwrap_or_else(PoisonError::into_inner);
        compress.reset();
        let mut out = Vec::with_capacity(data.len() / 3 + HEADER.len() + 64);
        out.extend_from_slice(&HEADER);
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(data.len() / 4 + 1024);
            }
            let consumed = usize::try_from(compress.total_in())
                .unwrap_or(data.len())
                .min(data.len());
            let status = compress
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status == Status::StreamEnd {
                break;
            }
        }
        let mut crc = Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE is the input size modulo 2^32 by definition.
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_through_a_standard_decoder_and_reuses_the_compressor() {
        let gzip = Gzip::new();
        for input in [
            Vec::new(),
            b"rpi_exporter_build_info 1\n".to_vec(),
            "rpi_filesystem_size_bytes{mountpoint=\"/\"} 31268536320\n"
                .repeat(5000)
                .into_bytes(),
        ] {
            let compressed = gzip.compress(&input).expect("compress");
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(compressed.as_slice())
                .read_to_end(&mut decoded)
                .expect("valid gzip");
            assert_eq!(decoded, input);
        }
    }
}
