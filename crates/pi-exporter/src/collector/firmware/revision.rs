//! The board revision code (GET_BOARD_REVISION, `/proc/cpuinfo` `Revision`) decoded into the
//! labels of `rpi_board_info`. Layout from `raspberrypi/utils:vcmailbox/raspirev.7`
//! (`shared/reference/firmware-mailbox.md` §8):
//!
//! ```text
//! bit  31 30 29 28..26 25 24 23 22..20 19..16 15..12 11..4    3..0
//!      N  O  Q  uuu    W  u  F  MMM    CCCC   PPPP   TTTTTTTT RRRR
//! ```
//!
//! Every table below is a plain match so a wrong or new entry is a one-line fix. Entries marked
//! [unverified] are not confirmed by the reference and should be checked against a real board.

/// Label value for a field the tables do not know.
pub const UNKNOWN: &str = "unknown";

/// The identity labels of `rpi_board_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardInfo {
    pub model: &'static str,
    /// The code as `/proc/cpuinfo` prints it, e.g. `c03114`: an identifier, not a number.
    pub revision: String,
    pub memory: &'static str,
    pub manufacturer: &'static str,
    pub processor: &'static str,
}

/// The code as the kernel prints it in `/proc/cpuinfo` (`%04x`).
fn format(code: u32) -> String {
    format!("{code:04x}")
}

/// Decodes a revision code.
pub fn decode(code: u32) -> BoardInfo {
    let new_style = (code >> 23) & 1 == 1;
    let (model, memory, manufacturer, processor) = if new_style {
        (
            model(((code >> 4) & 0xff) as u8),
            memory(((code >> 20) & 0x7) as u8),
            manufacturer(((code >> 16) & 0xf) as u8),
            processor(((code >> 12) & 0xf) as u8),
        )
    } else {
        old_style(code)
    };
    BoardInfo {
        model,
        revision: format(code),
        memory,
        manufacturer,
        processor,
    }
}

/// Board type `T`.
fn model(board_type: u8) -> &'static str {
    match board_type {
        0x00 => "Raspberry Pi Model A",
        0x01 => "Raspberry Pi Model B",
        0x02 => "Raspberry Pi Model A+",
        0x03 => "Raspberry Pi Model B+",
        0x04 => "Raspberry Pi 2 Model B",
        0x06 => "Raspberry Pi Compute Module 1",
        0x08 => "Raspberry Pi 3 Model B",
        0x09 => "Raspberry Pi Zero",
        0x0a => "Raspberry Pi Compute Module 3",
        0x0c => "Raspberry Pi Zero W",
        0x0d => "Raspberry Pi 3 Model B+",
        0x0e => "Raspberry Pi 3 Model A+",
        0x10 => "Raspberry Pi Compute Module 3+",
        0x11 => "Raspberry Pi 4 Model B",
        0x12 => "Raspberry Pi Zero 2 W",
        0x13 => "Raspberry Pi 400",
        0x14 => "Raspberry Pi Compute Module 4",
        // [unverified]
        0x15 => "Raspberry Pi Compute Module 4S",
        // Decoded from a real Pi 5 code (c04170).
        0x17 => "Raspberry Pi 5 Model B",
        // [unverified]
        0x18 => "Raspberry Pi Compute Module 5",
        // [unverified]
        0x19 => "Raspberry Pi 500",
        // [unverified]
        0x1a => "Raspberry Pi Compute Module 5 Lite",
        _ => UNKNOWN,
    }
}

/// Memory size `M`.
fn memory(code: u8) -> &'static str {
    match code {
        0 => "256MB",
        1 => "512MB",
        2 => "1GB",
        3 => "2GB",
        4 => "4GB",
        5 => "8GB",
        // [unverified]
        6 => "16GB",
        _ => UNKNOWN,
    }
}

/// Processor `P`.
fn processor(code: u8) -> &'static str {
    match code {
        0 => "BCM2835",
        1 => "BCM2836",
        2 => "BCM2837",
        3 => "BCM2711",
        4 => "BCM2712",
        _ => UNKNOWN,
    }
}

/// Manufacturer `C`. [unverified]: the reference marks the field's meaning as unconfirmed; the
/// names are those of the Raspberry Pi documentation's revision-code table.
fn manufacturer(code: u8) -> &'static str {
    match code {
        0 => "Sony UK",
        1 => "Egoman",
        2 | 4 => "Embest",
        3 => "Sony Japan",
        5 => "Stadium",
        _ => UNKNOWN,
    }
}

/// Old-style codes (bit 23 clear): a fixed table of the first Raspberry Pi 1 boards, all
/// BCM2835. [unverified]: from the Raspberry Pi documentation, not the reference. Bit 24 marks
/// a board whose warranty bit is set and is not part of the code.
fn old_style(code: u32) -> (&'static str, &'static str, &'static str, &'static str) {
    const B: &str = "Raspberry Pi Model B";
    const A: &str = "Raspberry Pi Model A";
    let (model, memory, manufacturer) = match code & 0x00ff_ffff {
        0x02 | 0x03 | 0x06 => (B, "256MB", "Egoman"),
        0x04 => (B, "256MB", "Sony UK"),
        0x05 => (B, "256MB", "Qisda"),
        0x07 => (A, "256MB", "Egoman"),
        0x08 => (A, "256MB", "Sony UK"),
        0x09 => (A, "256MB", "Qisda"),
        0x0d | 0x0f => (B, "512MB", "Egoman"),
        0x0e => (B, "512MB", "Sony UK"),
        0x10 => ("Raspberry Pi Model B+", "512MB", "Sony UK"),
        0x11 => ("Raspberry Pi Compute Module 1", "512MB", "Sony UK"),
        0x12 => ("Raspberry Pi Model A+", "256MB", "Sony UK"),
        0x13 => ("Raspberry Pi Model B+", "512MB", "Embest"),
        0x14 => ("Raspberry Pi Compute Module 1", "512MB", "Embest"),
        // Sold with 256 MB and with 512 MB under the same code.
        0x15 => ("Raspberry Pi Model A+", UNKNOWN, "Embest"),
        _ => return (UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN),
    };
    (model, memory, manufacturer, "BCM2835")
}

/// What `/proc/cpuinfo` says about the board.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub revision: Option<u32>,
    /// As printed, e.g. `10000000b3a1c2d4`.
    pub serial: Option<String>,
}

/// Parses the `Revision` and `Serial` lines of `/proc/cpuinfo` (tab-aligned `Key\t: value`).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Revision" => info.revision = u32::from_str_radix(value, 16).ok(),
            "Serial" if !value.is_empty() => info.serial = Some(value.to_owned()),
            _ => {}
        }
    }
    info
}

/// The serial as `/proc/cpuinfo` prints it, from GET_BOARD_SERIAL.
pub fn format_serial(serial: u64) -> String {
    format!("{serial:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_new_style_codes() {
        assert_eq!(
            decode(0x00c0_3114),
            BoardInfo {
                model: "Raspberry Pi 4 Model B",
                revision: "c03114".into(),
                memory: "4GB",
                manufacturer: "Sony UK",
                processor: "BCM2711",
            }
        );
        // The reference's worked decode of a real Pi 5.
        let pi5 = decode(0x00c0_4170);
        assert_eq!(
            (pi5.model, pi5.memory, pi5.processor, pi5.revision.as_str()),
            ("Raspberry Pi 5 Model B", "4GB", "BCM2712", "c04170")
        );
        assert_eq!(decode(0x00d0_4170).memory, "8GB");
        // 0x11 is the Pi 4, not the Pi 5 (a pitfall seen in the wild).
        assert_eq!(decode(0x00a0_3111).model, "Raspberry Pi 4 Model B");
        assert_eq!(decode(0x00a0_2082).model, "Raspberry Pi 3 Model B");
        assert_eq!(decode(0x00a0_2082).processor, "BCM2837");
        assert_eq!(decode(0x0090_0092).model, "Raspberry Pi Zero");
        // Unknown type, memory and processor values.
        let odd = decode(0x00f8_fff0);
        assert_eq!(
            (odd.model, odd.memory, odd.processor, odd.manufacturer),
            (UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN)
        );
    }

    #[test]
    fn decodes_old_style_codes_and_ignores_the_warranty_bit() {
        let b = decode(0x000e);
        assert_eq!(
            (b.model, b.memory, b.processor),
            ("Raspberry Pi Model B", "512MB", "BCM2835")
        );
        assert_eq!(b.revision, "000e");
        let warranty = decode(0x0100_0002);
        assert_eq!(warranty.model, "Raspberry Pi Model B");
        assert_eq!(warranty.revision, "1000002");
        assert_eq!(decode(0x0001).model, UNKNOWN);
    }

    #[test]
    fn reads_revision_and_serial_from_cpuinfo() {
        let text = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000b3a1c2d4\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(
            parse_cpuinfo(text),
            CpuInfo {
                revision: Some(0x00c0_3114),
                serial: Some("10000000b3a1c2d4".into())
            }
        );
        assert_eq!(parse_cpuinfo("Revision\t: zz\n"), CpuInfo::default());
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
        assert_eq!(format_serial(0x1000_0000_b3a1_c2d4), "10000000b3a1c2d4");
        assert_eq!(format_serial(0xb3a1_c2d4), "00000000b3a1c2d4");
    }
}
