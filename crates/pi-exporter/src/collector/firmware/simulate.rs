//! The simulated firmware behind `--simulate.board`: the `firmware:` section of a board file,
//! and a [`Mailbox`] that answers property buffers the way the kernel and the firmware do.
//!
//! Kernel side (`vcio.c`, `rpi_firmware_property_list`): size rules, its own copy of the buffer,
//! the end tag, and `EINVAL` (with the caller's buffer untouched) when the firmware's reply code
//! is not success. Firmware side (`vcmailbox.7`): tags processed in order and answered in place
//! with the response bit and the reply length, unknown tags left untouched, replies longer than
//! the value buffer cut while the length still says what the firmware wanted, GENCMD answered
//! from the board file. The schema is documented in `docs/simulated-board.md`.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;

use super::device::{Mailbox, check_declared_size};
use super::gencmd;
use super::mailbox::{
    CODE_PARSE_ERROR, CODE_SUCCESS, Clock, RESPONSE_BIT, VOLTAGE_INVALID, VoltageRail, tag,
};

/// The `firmware:` section of a board file: what each property tag and GENCMD command answers.
/// A tag whose value is absent is unknown to this firmware (its response bit stays clear).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareBoard {
    /// GET_FIRMWARE_REVISION: Unix time of the firmware build.
    #[serde(default)]
    pub firmware_revision: Option<u32>,
    /// GET_BOARD_MODEL.
    #[serde(default)]
    pub board_model: Option<u32>,
    /// GET_BOARD_REVISION: the revision code, e.g. `0xc03114`.
    #[serde(default)]
    pub board_revision: Option<u32>,
    /// GET_BOARD_SERIAL.
    #[serde(default)]
    pub board_serial: Option<u64>,
    /// GET_TEMPERATURE, milli-°C.
    #[serde(default)]
    pub temperature_millicelsius: Option<u32>,
    /// GET_MAX_TEMPERATURE, milli-°C.
    #[serde(default)]
    pub max_temperature_millicelsius: Option<u32>,
    /// GET_THROTTLED: the throttled word. Sticky bits stay set until a request clears them.
    #[serde(default)]
    pub throttled: Option<u32>,
    /// GET_CLOCK_RATE and GET_CLOCK_MEASURED, Hz. A clock not listed answers 0, as a clock the
    /// board does not have does.
    #[serde(default)]
    pub clocks: Option<BTreeMap<Clock, ClockRates>>,
    /// GET_VOLTAGE in the firmware's unit (µV). A rail not listed answers 0x80000000.
    #[serde(default)]
    pub voltages_microvolts: Option<BTreeMap<VoltageRail, u32>>,
    /// Tags this firmware does not know although a value is given above.
    #[serde(default)]
    pub unsupported: Vec<TagName>,
    /// Tags the firmware answers with an error code, so the kernel fails the whole ioctl with
    /// EINVAL (GET_BOARD_MODEL on a Pi 5).
    #[serde(default)]
    pub errors: Vec<TagName>,
    /// GENCMD: command line → answer text. Any other command gets the firmware's
    /// `error=1 error_msg="Command not registered"`. Absent: GENCMD is unknown.
    #[serde(default)]
    pub gencmd: Option<BTreeMap<String, String>>,
}

/// Set rate and measured rate of one clock.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRates {
    pub rate: u32,
    /// Defaults to 0, what the firmware answers for a clock it cannot measure.
    #[serde(default)]
    pub measured: u32,
}

/// Tag names usable in `unsupported` and `errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagName {
    FirmwareRevision,
    BoardModel,
    BoardRevision,
    BoardSerial,
    Temperature,
    MaxTemperature,
    Throttled,
    ClockRate,
    ClockMeasured,
    Voltage,
    Gencmd,
}

impl TagName {
    const fn id(self) -> u32 {
        match self {
            TagName::FirmwareRevision => tag::FIRMWARE_REVISION,
            TagName::BoardModel => tag::BOARD_MODEL,
            TagName::BoardRevision => tag::BOARD_REVISION,
            TagName::BoardSerial => tag::BOARD_SERIAL,
            TagName::Temperature => tag::TEMPERATURE,
            TagName::MaxTemperature => tag::MAX_TEMPERATURE,
            TagName::Throttled => tag::THROTTLED,
            TagName::ClockRate => tag::CLOCK_RATE,
            TagName::ClockMeasured => tag::CLOCK_MEASURED,
            TagName::Voltage => tag::VOLTAGE,
            TagName::Gencmd => tag::GENCMD,
        }
    }
}

/// GENCMD's return code for a command the firmware does not have. [unverified]: the reference
/// gives the answer text but not the code; any non-zero code means failure to vcgencmd.
pub const NOT_REGISTERED_CODE: u32 = 1;
/// GENCMD's answer for a command the firmware does not have (raspberrypi/utils#39).
pub const NOT_REGISTERED: &str = "error=1 error_msg=\"Command not registered\"";

/// The clear mask of GET_THROTTLED names sticky bits by their live counterparts: 0xffff (what
/// the kernel's hwmon driver sends) clears bits 16-31. [unverified] model of the firmware.
const fn sticky_bits_cleared_by(mask: u32) -> u32 {
    (mask & 0xffff) << 16
}

/// A simulated firmware answering like `/dev/vcio`.
#[derive(Debug)]
pub struct SimulatedFirmware {
    board: FirmwareBoard,
    /// The live throttled word; reads with a clear mask change it.
    throttled: Mutex<Option<u32>>,
    ioctls: AtomicU64,
}

enum Answer {
    /// The firmware does not know the tag: leave it untouched.
    Unknown,
    /// The reply words and the reply length in bytes the firmware reports.
    Reply(Vec<u32>, u32),
    /// The firmware fails the buffer with this code.
    Error(u32),
}

impl SimulatedFirmware {
    pub fn new(board: FirmwareBoard) -> Self {
        Self {
            throttled: Mutex::new(board.throttled),
            board,
            ioctls: AtomicU64::new(0),
        }
    }

    /// How many ioctls this device (and its GENCMD node) received.
    pub fn ioctls(&self) -> u64 {
        self.ioctls.load(Ordering::Relaxed)
    }

    /// The throttled word as it is now, sticky bits included.
    pub fn throttled(&self) -> Option<u32> {
        *self
            .throttled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The restricted `/dev/vcio_gencmd` node of this firmware: only GENCMD is allowed there;
    /// any other tag fails with `EPERM`, as `vcio_check_tags` does.
    pub fn gencmd_node(self: &Arc<Self>) -> Arc<dyn Mailbox> {
        Arc::new(GencmdNode(Arc::clone(self)))
    }

    fn answer(&self, id: u32, request: &[u32]) -> Answer {
        if self.board.errors.iter().any(|t| t.id() == id) {
            return Answer::Error(CODE_PARSE_ERROR);
        }
        if self.board.unsupported.iter().any(|t| t.id() == id) {
            return Answer::Unknown;
        }
        let arg = request.first().copied().unwrap_or(0);
        let b = &self.board;
        let words = match id {
            tag::FIRMWARE_REVISION => b.firmware_revision.map(|v| vec![v]),
            tag::BOARD_MODEL => b.board_model.map(|v| vec![v]),
            tag::BOARD_REVISION => b.board_revision.map(|v| vec![v]),
            // Low word first, a native u64 on a little-endian Pi.
            tag::BOARD_SERIAL => b.board_serial.map(|v| vec![v as u32, (v >> 32) as u32]),
            tag::TEMPERATURE => b.temperature_millicelsius.map(|v| vec![arg, v]),
            tag::MAX_TEMPERATURE => b.max_temperature_millicelsius.map(|v| vec![arg, v]),
            tag::THROTTLED => {
                let mut state = self
                    .throttled
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                state.as_mut().map(|word| {
                    let before = *word;
                    *word &= !sticky_bits_cleared_by(arg);
                    vec![before]
                })
            }
            tag::CLOCK_RATE | tag::CLOCK_MEASURED => b.clocks.as_ref().map(|clocks| {
                let rates = Clock::from_id(arg).and_then(|c| clocks.get(&c));
                let rate = match (rates, id) {
                    (Some(r), tag::CLOCK_RATE) => r.rate,
                    (Some(r), _) => r.measured,
                    (None, _) => 0,
                };
                vec![arg, rate]
            }),
            tag::VOLTAGE => b.voltages_microvolts.as_ref().map(|volts| {
                let value = VoltageRail::from_id(arg).and_then(|r| volts.get(&r));
                vec![arg, value.copied().unwrap_or(VOLTAGE_INVALID)]
            }),
            tag::GENCMD => {
                return match &b.gencmd {
                    Some(commands) => {
                        let command = gencmd::text_after_code(request);
                        let (code, text) = match commands.get(command.trim()) {
                            Some(text) => (0, text.as_str()),
                            None => (NOT_REGISTERED_CODE, NOT_REGISTERED),
                        };
                        let mut reply = vec![0; gencmd::VALUE_BYTES as usize / 4];
                        let len = gencmd::write_reply(&mut reply, code, text);
                        reply.truncate((len as usize).div_ceil(4));
                        Answer::Reply(reply, len)
                    }
                    None => Answer::Unknown,
                };
            }
            _ => None,
        };
        match words {
            Some(words) => {
                let len = (words.len() * 4) as u32;
                Answer::Reply(words, len)
            }
            None => Answer::Unknown,
        }
    }

    /// The firmware's pass over the tags (header and end tag stripped): answers in place and
    /// returns the buffer's reply code.
    fn process(&self, tags: &mut [u32]) -> u32 {
        let mut i = 0;
        while let Some(&id) = tags.get(i) {
            if id == 0 {
                break;
            }
            let Some(&room) = tags.get(i + 1) else {
                return CODE_PARSE_ERROR;
            };
            let start = i + 3;
            let end = start + (room as usize).div_ceil(4);
            if end > tags.len() {
                return CODE_PARSE_ERROR;
            }
            match self.answer(id, &tags[start..end]) {
                Answer::Unknown => {}
                Answer::Error(code) => return code,
                Answer::Reply(words, len) => {
                    let n = words.len().min(end - start);
                    tags[start..start + n].copy_from_slice(&words[..n]);
                    tags[i + 2] = RESPONSE_BIT | len;
                }
            }
            i = end;
        }
        CODE_SUCCESS
    }
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// The words of a buffer the kernel would accept: `buf[0]` bytes, at least header and end tag,
/// a multiple of 4.
fn checked_len(buf: &[u32]) -> io::Result<usize> {
    check_declared_size(buf).map_err(|_| os_error(libc::EFAULT))?;
    let size = buf[0];
    if size < 12 || !size.is_multiple_of(4) {
        return Err(os_error(libc::EINVAL));
    }
    Ok(size as usize / 4)
}

impl Mailbox for SimulatedFirmware {
    fn property(&self, buf: &mut [u32]) -> io::Result<()> {
        self.ioctls.fetch_add(1, Ordering::Relaxed);
        let words = checked_len(buf)?;
        // The kernel works on its own copy, resets the code and writes the end tag itself.
        let mut copy = buf[..words].to_vec();
        copy[1] = 0;
        copy[words - 1] = 0;
        let code = self.process(&mut copy[2..words - 1]);
        if code != CODE_SUCCESS {
            // "Request ... returned status ..." in dmesg; nothing is copied back.
            return Err(os_error(libc::EINVAL));
        }
        copy[1] = CODE_SUCCESS;
        buf[..words].copy_from_slice(&copy);
        Ok(())
    }
}

/// `/dev/vcio_gencmd`.
#[derive(Debug)]
struct GencmdNode(Arc<SimulatedFirmware>);

impl Mailbox for GencmdNode {
    fn property(&self, buf: &mut [u32]) -> io::Result<()> {
        let words = checked_len(buf)?;
        let mut i = 2;
        while let Some(&id) = buf[..words - 1].get(i) {
            if id == 0 {
                break;
            }
            if id != tag::GENCMD {
                self.0.ioctls.fetch_add(1, Ordering::Relaxed);
                return Err(os_error(libc::EPERM));
            }
            let room = buf.get(i + 1).copied().unwrap_or(0);
            i += 3 + (room as usize).div_ceil(4);
        }
        self.0.property(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::firmware::mailbox::{
        Property, PropertyBatch, TagError, TagRequest, encode, tag_reply,
    };

    fn board(yaml: &str) -> FirmwareBoard {
        serde_saphyr::from_str(yaml).expect("valid firmware section")
    }

    fn pi4() -> SimulatedFirmware {
        SimulatedFirmware::new(board(
            "
firmware_revision: 1700000000
board_revision: 0xc03114
board_serial: 0x10000000b3a1c2d4
temperature_millicelsius: 51432
throttled: 0x50005
clocks:
  arm: { rate: 1500000000, measured: 600000000 }
voltages_microvolts:
  core: 850000
gencmd:
  get_throttled: throttled=0x50005
",
        ))
    }

    fn ask(fw: &impl Mailbox, props: &[Property]) -> io::Result<Vec<Result<u64, TagError>>> {
        let batch = PropertyBatch::new(props.to_vec());
        let mut buf = batch.request();
        fw.property(&mut buf)?;
        Ok(batch.decode(&buf).map(|(_, r)| r).collect())
    }

    #[test]
    fn answers_known_tags_and_leaves_unknown_ones_untouched() {
        let fw = pi4();
        let replies = ask(
            &fw,
            &[
                Property::FirmwareRevision,
                Property::BoardRevision,
                Property::BoardSerial,
                Property::Temperature,
                Property::MaxTemperature,
                Property::ClockMeasured(Clock::Arm),
                Property::ClockRate(Clock::Hevc),
                Property::Voltage(VoltageRail::Core),
                Property::Voltage(VoltageRail::SdramI),
            ],
        )
        .expect("ioctl succeeds");
        assert_eq!(
            replies,
            [
                Ok(1_700_000_000),
                Ok(0xc0_3114),
                Ok(0x1000_0000_b3a1_c2d4),
                Ok(51_432),
                Err(TagError::NotAnswered),
                Ok(600_000_000),
                Ok(0),
                Ok(850_000),
                Ok(u64::from(VOLTAGE_INVALID)),
            ]
        );
        assert_eq!(fw.ioctls(), 1);
    }

    #[test]
    fn sticky_bits_survive_reads_with_clear_mask_zero() {
        let fw = pi4();
        for _ in 0..3 {
            assert_eq!(
                ask(&fw, &[Property::Throttled]).expect("ioctl"),
                [Ok(0x50005)]
            );
        }
        assert_eq!(fw.throttled(), Some(0x50005));
        // What the kernel's hwmon driver does every 2 s: the history is gone afterwards.
        let mut buf = encode(&[TagRequest {
            id: tag::THROTTLED,
            value_bytes: 4,
            args: vec![0xffff],
        }])
        .words;
        fw.property(&mut buf).expect("ioctl");
        assert_eq!(buf[5], 0x50005, "the reply is the word before clearing");
        assert_eq!(fw.throttled(), Some(0x5));
    }

    #[test]
    fn an_erroring_tag_fails_the_whole_ioctl_and_leaves_the_buffer() {
        let mut section =
            board("board_revision: 0xd04170\nboard_model: 0\nerrors: [board_model]\n");
        let fw = SimulatedFirmware::new(section.clone());
        let request = encode(&[
            Property::BoardRevision.request(),
            TagRequest {
                id: tag::BOARD_MODEL,
                value_bytes: 4,
                args: vec![],
            },
        ])
        .words;
        let mut buf = request.clone();
        let err = fw.property(&mut buf).expect_err("EINVAL");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(buf, request);
        // Alone, the revision is answered.
        assert_eq!(
            ask(&fw, &[Property::BoardRevision]).expect("ok"),
            [Ok(0xd0_4170)]
        );
        section.unsupported = vec![TagName::BoardRevision];
        let fw = SimulatedFirmware::new(section);
        assert_eq!(
            ask(&fw, &[Property::BoardRevision]).expect("ok"),
            [Err(TagError::NotAnswered)]
        );
    }

    #[test]
    fn enforces_the_kernels_size_rules() {
        let fw = pi4();
        for bad in [vec![8, 0], vec![13, 0, 0, 0], vec![0, 0, 0]] {
            let mut buf = bad.clone();
            let err = fw.property(&mut buf).expect_err("EINVAL");
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
        let mut claims_more = vec![64, 0, 0];
        assert_eq!(
            fw.property(&mut claims_more).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EFAULT))
        );
        // A tag whose value buffer runs past the end: the firmware's parse error.
        let mut overrun = vec![24, 0, tag::TEMPERATURE, 64, 0, 0];
        assert_eq!(
            fw.property(&mut overrun).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EINVAL))
        );
        // The kernel writes the end tag itself, whatever the caller left there.
        let mut buf = PropertyBatch::new(vec![Property::Temperature]).request();
        buf[7] = 0xdead_beef;
        fw.property(&mut buf).expect("ok");
        assert_eq!((buf[1], buf[7]), (CODE_SUCCESS, 0));
    }

    #[test]
    fn cuts_replies_longer_than_the_value_buffer_and_reports_the_wanted_length() {
        let fw = pi4();
        // GET_BOARD_SERIAL with room for one word only.
        let mut buf = encode(&[TagRequest {
            id: tag::BOARD_SERIAL,
            value_bytes: 4,
            args: vec![],
        }])
        .words;
        fw.property(&mut buf).expect("ok");
        assert_eq!(
            &buf[2..7],
            &[tag::BOARD_SERIAL, 4, RESPONSE_BIT | 8, 0xb3a1_c2d4, 0]
        );
        assert_eq!(
            tag_reply(&buf, 2),
            Err(TagError::Truncated { wanted: 8, room: 4 })
        );
    }

    #[test]
    fn answers_gencmd_from_the_board_file() {
        let fw = Arc::new(pi4());
        let node = fw.gencmd_node();
        let run = |device: &dyn Mailbox, command: &str| {
            let mut buf = gencmd::request(command).expect("fits");
            device.property(&mut buf).map(|()| gencmd::decode(&buf))
        };
        assert_eq!(
            run(node.as_ref(), "get_throttled").expect("ioctl"),
            Ok("throttled=0x50005".into())
        );
        assert_eq!(
            run(fw.as_ref(), "get_camera").expect("ioctl"),
            Err(gencmd::GencmdError::Failed {
                code: NOT_REGISTERED_CODE,
                text: NOT_REGISTERED.into()
            })
        );
        // The restricted node refuses property tags.
        let mut buf = PropertyBatch::new(vec![Property::Temperature]).request();
        assert_eq!(
            node.property(&mut buf).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EPERM))
        );
        assert_eq!(fw.ioctls(), 3);
        // Without a gencmd section the tag is unknown.
        let bare = SimulatedFirmware::new(FirmwareBoard::default());
        assert_eq!(
            run(&bare, "get_throttled").expect("ioctl"),
            Err(gencmd::GencmdError::Tag(TagError::NotAnswered))
        );
    }

    #[test]
    fn schema_errors_name_the_key() {
        for (yaml, key) in [
            ("temprature_millicelsius: 1\n", "temprature_millicelsius"),
            ("clocks:\n  armm: { rate: 1 }\n", "armm"),
            ("clocks:\n  arm: { rat: 1 }\n", "rat"),
            ("errors: [board_modle]\n", "board_modle"),
            ("voltages_microvolts:\n  sdram: 1\n", "sdram"),
        ] {
            let err = serde_saphyr::from_str::<FirmwareBoard>(yaml).expect_err(yaml);
            assert!(err.to_string().contains(key), "{key} not in: {err}");
        }
    }
}
