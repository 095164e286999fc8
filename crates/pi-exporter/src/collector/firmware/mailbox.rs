//! The firmware's property-mailbox protocol as pure functions: the ioctl request number, tag ids,
//! encoding a buffer of tags, and checking and decoding each tag's reply.
//!
//! Layout (all words host-endian `u32`; see `shared/reference/firmware-mailbox.md` §2):
//!
//! ```text
//! [0] buffer size in bytes    [1] code: 0 request, 0x80000000 success, 0x80000001 parse error
//! per tag: id, value-buffer bytes, req/resp (b31 set in a reply, b30..0 the reply length),
//!          value buffer (request arguments, overwritten by the reply)
//! end tag: 0
//! ```
//!
//! Nothing here does I/O; `device` sends the buffers and `simulate` answers them.

use std::ffi::c_char;
use std::mem::size_of;

use serde::Deserialize;

/// `VCIO_IOC_MAGIC` of `drivers/char/broadcom/vcio.c`.
const VCIO_IOC_MAGIC: u32 = 100;

/// `_IOWR(VCIO_IOC_MAGIC, 0, char *)` for a userland whose pointers are `pointer_bytes` wide:
/// the argument size is part of the number, so it is 0xC0086400 on aarch64 and 0xC0046400 on
/// armv7 (a 32-bit process on a 64-bit kernel goes through the kernel's compat variant, which
/// has the 32-bit number).
pub const fn property_request(pointer_bytes: usize) -> u32 {
    const IOC_READ_WRITE: u32 = 3;
    (IOC_READ_WRITE << 30) | ((pointer_bytes as u32) << 16) | (VCIO_IOC_MAGIC << 8)
}

/// `IOCTL_MBOX_PROPERTY` for the target being compiled.
pub const IOCTL_MBOX_PROPERTY: u32 = property_request(size_of::<*mut c_char>());

/// Buffer code of a request.
pub const CODE_REQUEST: u32 = 0;
/// Buffer code the firmware writes when it processed the buffer.
pub const CODE_SUCCESS: u32 = 0x8000_0000;
/// Buffer code the firmware writes when it could not parse the buffer.
pub const CODE_PARSE_ERROR: u32 = 0x8000_0001;
/// Set in a tag's req/resp word once the firmware answered it.
pub const RESPONSE_BIT: u32 = 1 << 31;
/// Header (size, code) and end tag, in words.
const HEADER_WORDS: usize = 2;
/// Tag id, value-buffer size and req/resp word.
const TAG_HEADER_WORDS: usize = 3;

/// Property tag ids (`include/soc/bcm2835/raspberrypi-firmware.h`).
pub mod tag {
    pub const FIRMWARE_REVISION: u32 = 0x0000_0001;
    pub const BOARD_MODEL: u32 = 0x0001_0001;
    pub const BOARD_REVISION: u32 = 0x0001_0002;
    pub const BOARD_SERIAL: u32 = 0x0001_0004;
    pub const CLOCK_RATE: u32 = 0x0003_0002;
    pub const VOLTAGE: u32 = 0x0003_0003;
    pub const TEMPERATURE: u32 = 0x0003_0006;
    pub const MAX_TEMPERATURE: u32 = 0x0003_000a;
    pub const THROTTLED: u32 = 0x0003_0046;
    pub const CLOCK_MEASURED: u32 = 0x0003_0047;
    pub const GENCMD: u32 = 0x0003_0080;
}

/// The request word of GET_THROTTLED is a mask of sticky bits to clear. The exporter always
/// sends 0 so it never erases the history other tools (and people) rely on.
pub const THROTTLED_CLEAR_NONE: u32 = 0;

/// GET_VOLTAGE's answer for a voltage id the firmware does not have.
pub const VOLTAGE_INVALID: u32 = 0x8000_0000;

/// Firmware clocks (`enum rpi_firmware_clk_id`); the discriminant is the mailbox clock id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u32)]
pub enum Clock {
    Emmc = 1,
    Uart = 2,
    Arm = 3,
    Core = 4,
    V3d = 5,
    H264 = 6,
    Isp = 7,
    Sdram = 8,
    Pixel = 9,
    Pwm = 10,
    Hevc = 11,
    Emmc2 = 12,
    M2mc = 13,
    PixelBvb = 14,
    Vec = 15,
    Disp = 16,
}

impl Clock {
    pub const ALL: [Clock; 16] = [
        Clock::Emmc,
        Clock::Uart,
        Clock::Arm,
        Clock::Core,
        Clock::V3d,
        Clock::H264,
        Clock::Isp,
        Clock::Sdram,
        Clock::Pixel,
        Clock::Pwm,
        Clock::Hevc,
        Clock::Emmc2,
        Clock::M2mc,
        Clock::PixelBvb,
        Clock::Vec,
        Clock::Disp,
    ];

    pub const fn id(self) -> u32 {
        self as u32
    }

    pub fn from_id(id: u32) -> Option<Clock> {
        Self::ALL.into_iter().find(|c| c.id() == id)
    }

    /// The `clock` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Clock::Emmc => "emmc",
            Clock::Uart => "uart",
            Clock::Arm => "arm",
            Clock::Core => "core",
            Clock::V3d => "v3d",
            Clock::H264 => "h264",
            Clock::Isp => "isp",
            Clock::Sdram => "sdram",
            Clock::Pixel => "pixel",
            Clock::Pwm => "pwm",
            Clock::Hevc => "hevc",
            Clock::Emmc2 => "emmc2",
            Clock::M2mc => "m2mc",
            Clock::PixelBvb => "pixel_bvb",
            Clock::Vec => "vec",
            Clock::Disp => "disp",
        }
    }
}

/// GET_VOLTAGE ids. Note the order: 3 is SDRAM_P and 4 SDRAM_I, while `vcgencmd measure_volts`
/// lists them as core, sdram_c, sdram_i, sdram_p.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u32)]
pub enum VoltageRail {
    Core = 1,
    SdramC = 2,
    SdramP = 3,
    SdramI = 4,
}

impl VoltageRail {
    pub const ALL: [VoltageRail; 4] = [
        VoltageRail::Core,
        VoltageRail::SdramC,
        VoltageRail::SdramP,
        VoltageRail::SdramI,
    ];

    pub const fn id(self) -> u32 {
        self as u32
    }

    pub fn from_id(id: u32) -> Option<VoltageRail> {
        Self::ALL.into_iter().find(|v| v.id() == id)
    }

    /// The `rail` label value.
    pub const fn label(self) -> &'static str {
        match self {
            VoltageRail::Core => "core",
            VoltageRail::SdramC => "sdram_c",
            VoltageRail::SdramP => "sdram_p",
            VoltageRail::SdramI => "sdram_i",
        }
    }
}

/// One reading the collector asks the firmware for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// Unix time of the firmware build.
    FirmwareRevision,
    /// The revision code `/proc/cpuinfo` prints.
    BoardRevision,
    BoardSerial,
    /// SoC temperature in milli-°C.
    Temperature,
    /// The firmware's maximum safe temperature in milli-°C.
    MaxTemperature,
    /// The throttled word, always asked with clear mask 0.
    Throttled,
    /// Set rate of a clock in Hz; 0 when the board does not have it.
    ClockRate(Clock),
    /// Measured rate of a clock in Hz; what shows firmware throttling.
    ClockMeasured(Clock),
    /// Voltage in the firmware's unit (µV on current firmware), `VOLTAGE_INVALID` for an
    /// unknown id.
    Voltage(VoltageRail),
}

impl Property {
    pub const fn tag(self) -> u32 {
        match self {
            Property::FirmwareRevision => tag::FIRMWARE_REVISION,
            Property::BoardRevision => tag::BOARD_REVISION,
            Property::BoardSerial => tag::BOARD_SERIAL,
            Property::Temperature => tag::TEMPERATURE,
            Property::MaxTemperature => tag::MAX_TEMPERATURE,
            Property::Throttled => tag::THROTTLED,
            Property::ClockRate(_) => tag::CLOCK_RATE,
            Property::ClockMeasured(_) => tag::CLOCK_MEASURED,
            Property::Voltage(_) => tag::VOLTAGE,
        }
    }

    /// The request argument, if the tag takes one.
    const fn argument(self) -> Option<u32> {
        match self {
            Property::FirmwareRevision | Property::BoardRevision | Property::BoardSerial => None,
            // Sensor id 0, the only one.
            Property::Temperature | Property::MaxTemperature => Some(0),
            Property::Throttled => Some(THROTTLED_CLEAR_NONE),
            Property::ClockRate(clock) | Property::ClockMeasured(clock) => Some(clock.id()),
            Property::Voltage(rail) => Some(rail.id()),
        }
    }

    /// Whether the reply starts by echoing the request argument (id, value).
    const fn echoes_argument(self) -> bool {
        matches!(
            self,
            Property::Temperature
                | Property::MaxTemperature
                | Property::ClockRate(_)
                | Property::ClockMeasured(_)
                | Property::Voltage(_)
        )
    }

    /// Words of the reply value.
    const fn reply_words(self) -> usize {
        match self {
            Property::FirmwareRevision | Property::BoardRevision | Property::Throttled => 1,
            // The 64-bit serial, and (id, value) pairs.
            _ => 2,
        }
    }

    /// How this property goes into a buffer.
    pub fn request(self) -> TagRequest {
        let args = self.argument().map_or_else(Vec::new, |a| vec![a]);
        let words = self.reply_words().max(args.len());
        TagRequest {
            id: self.tag(),
            value_bytes: (words * 4) as u32,
            args,
        }
    }

    /// Decodes a checked reply value (see [`tag_reply`]) to the reading.
    pub fn decode(self, value: &[u32]) -> Result<u64, TagError> {
        let needed = self.reply_words();
        if value.len() < needed {
            return Err(TagError::Short {
                got: (value.len() * 4) as u32,
                needed: (needed * 4) as u32,
            });
        }
        match self {
            // Low word first: the kernel reads it as a native u64 on a little-endian Pi.
            Property::BoardSerial => Ok(u64::from(value[0]) | (u64::from(value[1]) << 32)),
            _ if self.echoes_argument() => {
                let sent = self.argument().unwrap_or_default();
                if value[0] != sent {
                    return Err(TagError::WrongId {
                        sent,
                        got: value[0],
                    });
                }
                Ok(u64::from(value[1]))
            }
            _ => Ok(u64::from(value[0])),
        }
    }
}

/// One tag of a request buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRequest {
    pub id: u32,
    /// Size of the value buffer, a multiple of 4, large enough for the request and the reply.
    pub value_bytes: u32,
    /// Request arguments at the start of the value buffer; the rest is zero.
    pub args: Vec<u32>,
}

impl TagRequest {
    fn value_words(&self) -> usize {
        (self.value_bytes as usize).div_ceil(4)
    }
}

/// Why one tag's reply cannot be used. None of these affect the other tags of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The response bit stayed clear: the firmware does not know this tag.
    #[error("not answered (the firmware does not support this tag)")]
    NotAnswered,
    /// The firmware wanted to reply with more than the value buffer holds and cut it.
    #[error("reply truncated: the firmware wanted {wanted} bytes, the buffer holds {room}")]
    Truncated { wanted: u32, room: u32 },
    /// The reply is shorter than the value needs.
    #[error("reply of {got} bytes, expected at least {needed}")]
    Short { got: u32, needed: u32 },
    /// The reply is about another clock, voltage or sensor than the one asked for.
    #[error("reply for id {got}, asked for {sent}")]
    WrongId { sent: u32, got: u32 },
    /// The buffer ends before the tag does (a bug in the caller, or a corrupted reply).
    #[error("tag lies outside the buffer")]
    OutOfBounds,
}

/// Why a whole reply buffer cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    #[error("firmware reply code {0:#010x}, expected 0x80000000")]
    Code(u32),
    #[error("reply buffer of {0} words is shorter than its header")]
    TooShort(usize),
}

/// A request buffer and where each of its tags starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub words: Vec<u32>,
    /// Word index of each tag's id, in request order.
    pub offsets: Vec<usize>,
}

/// Encodes tags into one property buffer: header, the tags in order, end tag.
pub fn encode(tags: &[TagRequest]) -> Encoded {
    let tag_words: usize = tags
        .iter()
        .map(|t| TAG_HEADER_WORDS + t.value_words())
        .sum();
    let total = HEADER_WORDS + tag_words + 1;
    let mut words = Vec::with_capacity(total);
    words.push((total * 4) as u32);
    words.push(CODE_REQUEST);
    let mut offsets = Vec::with_capacity(tags.len());
    for t in tags {
        offsets.push(words.len());
        words.extend([t.id, t.value_bytes, 0]);
        let value_start = words.len();
        words.extend(t.args.iter().take(t.value_words()));
        words.resize(value_start + t.value_words(), 0);
    }
    words.push(0);
    Encoded { words, offsets }
}

/// Checks the buffer code of a reply.
pub fn check_buffer(buf: &[u32]) -> Result<(), BufferError> {
    match buf.get(1) {
        None => Err(BufferError::TooShort(buf.len())),
        Some(&CODE_SUCCESS) => Ok(()),
        Some(&code) => Err(BufferError::Code(code)),
    }
}

/// The reply value of the tag starting at word `offset`: checks the response bit and that the
/// reply fits its value buffer, and returns the words the reply length covers.
pub fn tag_reply(buf: &[u32], offset: usize) -> Result<&[u32], TagError> {
    let header = buf
        .get(offset..offset + TAG_HEADER_WORDS)
        .ok_or(TagError::OutOfBounds)?;
    let (room, status) = (header[1], header[2]);
    if status & RESPONSE_BIT == 0 {
        return Err(TagError::NotAnswered);
    }
    let wanted = status & !RESPONSE_BIT;
    if wanted > room {
        return Err(TagError::Truncated { wanted, room });
    }
    let start = offset + TAG_HEADER_WORDS;
    buf.get(start..start + (wanted as usize).div_ceil(4))
        .ok_or(TagError::OutOfBounds)
}

/// Properties encoded into one buffer, for one ioctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyBatch {
    properties: Vec<Property>,
    encoded: Encoded,
}

impl PropertyBatch {
    pub fn new(properties: Vec<Property>) -> Self {
        let requests: Vec<TagRequest> = properties.iter().map(|p| p.request()).collect();
        Self {
            encoded: encode(&requests),
            properties,
        }
    }

    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    /// A fresh request buffer to hand to the device (the reply overwrites it).
    pub fn request(&self) -> Vec<u32> {
        self.encoded.words.clone()
    }

    /// Decodes every property from the reply `buf`, in request order.
    pub fn decode<'a>(
        &'a self,
        buf: &'a [u32],
    ) -> impl Iterator<Item = (Property, Result<u64, TagError>)> + 'a {
        self.properties
            .iter()
            .zip(&self.encoded.offsets)
            .map(move |(&p, &offset)| (p, tag_reply(buf, offset).and_then(|v| p.decode(v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_depends_on_pointer_width() {
        assert_eq!(property_request(4), 0xC004_6400);
        assert_eq!(property_request(8), 0xC008_6400);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(IOCTL_MBOX_PROPERTY, 0xC008_6400);
        #[cfg(target_pointer_width = "32")]
        assert_eq!(IOCTL_MBOX_PROPERTY, 0xC004_6400);
    }

    #[test]
    fn encodes_the_reference_temperature_request_exactly() {
        let batch = PropertyBatch::new(vec![Property::Temperature]);
        assert_eq!(
            batch.request(),
            [0x20, 0, 0x0003_0006, 8, 0, 0, 0, 0],
            "firmware-mailbox.md §2 worked example"
        );
        let reply = [0x20, 0x8000_0000, 0x0003_0006, 8, 0x8000_0008, 0, 51_432, 0];
        let decoded: Vec<_> = batch.decode(&reply).collect();
        assert_eq!(decoded, [(Property::Temperature, Ok(51_432))]);
    }

    #[test]
    fn encodes_several_tags_in_order_with_their_arguments() {
        let batch = PropertyBatch::new(vec![
            Property::FirmwareRevision,
            Property::Throttled,
            Property::ClockMeasured(Clock::Arm),
            Property::BoardSerial,
        ]);
        #[rustfmt::skip]
        let expected = [
            4 * 21, 0,
            0x0000_0001, 4, 0, 0,
            0x0003_0046, 4, 0, 0,
            0x0003_0047, 8, 0, 3, 0,
            0x0001_0004, 8, 0, 0, 0,
            0,
        ];
        assert_eq!(batch.request(), expected);
        assert_eq!(batch.encoded.offsets, [2, 6, 10, 15]);
        // Bytes on the wire, as the kernel copies them (little-endian host).
        let bytes: Vec<u8> = batch
            .request()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(&bytes[..12], &[84, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&bytes[40..52], &[0x47, 0, 3, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn decodes_each_tag_independently() {
        let batch = PropertyBatch::new(vec![
            Property::FirmwareRevision,
            Property::Throttled,
            Property::ClockMeasured(Clock::Arm),
            Property::BoardSerial,
        ]);
        #[rustfmt::skip]
        let reply = [
            4 * 21, CODE_SUCCESS,
            0x0000_0001, 4, RESPONSE_BIT | 4, 0x653F_DD96,
            // Unknown to this firmware: left untouched.
            0x0003_0046, 4, 0, 0,
            0x0003_0047, 8, RESPONSE_BIT | 8, 3, 1_500_000_000,
            0x0001_0004, 8, RESPONSE_BIT | 8, 0xabcd_ef01, 0x1000_0000,
            0,
        ];
        let decoded: Vec<_> = batch.decode(&reply).map(|(_, r)| r).collect();
        assert_eq!(
            decoded,
            [
                Ok(0x653F_DD96),
                Err(TagError::NotAnswered),
                Ok(1_500_000_000),
                Ok(0x1000_0000_abcd_ef01),
            ]
        );
        assert_eq!(check_buffer(&reply), Ok(()));
    }

    #[test]
    fn truncated_short_and_misdirected_replies_are_per_tag_errors() {
        let batch = PropertyBatch::new(vec![
            Property::ClockRate(Clock::Core),
            Property::Temperature,
            Property::Voltage(VoltageRail::SdramI),
            Property::BoardRevision,
        ]);
        #[rustfmt::skip]
        let reply = [
            4 * 22, CODE_SUCCESS,
            // The firmware wanted 12 bytes and had room for 8.
            0x0003_0002, 8, RESPONSE_BIT | 12, 4, 500_000_000,
            // Only 4 bytes answered where id and value are expected.
            0x0003_0006, 8, RESPONSE_BIT | 4, 0, 0,
            // A reply about SDRAM_P (3) when SDRAM_I (4) was asked for.
            0x0003_0003, 8, RESPONSE_BIT | 8, 3, 1_100_000,
            0x0001_0002, 4, RESPONSE_BIT | 4, 0x00c0_3114,
            0,
        ];
        let decoded: Vec<_> = batch.decode(&reply).map(|(_, r)| r).collect();
        assert_eq!(
            decoded,
            [
                Err(TagError::Truncated {
                    wanted: 12,
                    room: 8
                }),
                Err(TagError::Short { got: 4, needed: 8 }),
                Err(TagError::WrongId { sent: 4, got: 3 }),
                Ok(0x00c0_3114),
            ]
        );
        // A reply cut off in the middle of a tag never panics.
        let cut: Vec<_> = batch.decode(&reply[..9]).map(|(_, r)| r).collect();
        assert_eq!(cut[1], Err(TagError::OutOfBounds));
        assert_eq!(cut[3], Err(TagError::OutOfBounds));
        assert_eq!(tag_reply(&[], 2), Err(TagError::OutOfBounds));
    }

    #[test]
    fn buffer_codes_other_than_success_are_errors() {
        assert_eq!(
            check_buffer(&[12, CODE_PARSE_ERROR, 0]),
            Err(BufferError::Code(CODE_PARSE_ERROR))
        );
        assert_eq!(
            check_buffer(&[12, CODE_REQUEST, 0]),
            Err(BufferError::Code(0))
        );
        assert_eq!(check_buffer(&[12]), Err(BufferError::TooShort(1)));
    }

    #[test]
    fn clock_and_voltage_ids_match_the_firmware() {
        assert_eq!(Clock::Arm.id(), 3);
        assert_eq!(Clock::Disp.id(), 16);
        assert_eq!(Clock::from_id(12), Some(Clock::Emmc2));
        assert_eq!(Clock::from_id(0), None);
        assert!(
            Clock::ALL
                .iter()
                .enumerate()
                .all(|(i, c)| c.id() as usize == i + 1)
        );
        assert_eq!(VoltageRail::SdramP.id(), 3);
        assert_eq!(VoltageRail::SdramI.id(), 4);
        assert_eq!(
            VoltageRail::from_id(4).map(VoltageRail::label),
            Some("sdram_i")
        );
    }
}
