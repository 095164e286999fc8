//! `--simulate.board FILE`: a YAML description of a Raspberry Pi that replaces its hardware with
//! simulators working at the same level as the real devices (mailbox property buffers, I2C
//! register maps, sysfs files), so the same drivers run in tests and in the newcomer demo.
//!
//! Each hardware collector owns one optional section of the file and its schema; this module
//! only loads the file. The schema is documented in `docs/simulated-board.md`.

pub use crate::collector::board::{BoardFile, BoardFileError, load};
