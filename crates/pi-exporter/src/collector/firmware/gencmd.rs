//! GENCMD (tag 0x00030080): the firmware's text command interface that `vcgencmd` uses, sent
//! as a property buffer like any other tag. Used only where no property tag exists (the Pi 5's
//! `pmic_read_adc`) or answers (`get_throttled`); `vcgencmd` itself is never spawned.
//!
//! Buffer (`raspberrypi/utils:vcgencmd/vcgencmd.c`): one tag with a 4096-byte value buffer whose
//! first word is the return-code slot, followed by the NUL-terminated command; the reply
//! overwrites it with the return code and the NUL-terminated answer. vcgencmd's buffer is 4 bytes
//! longer than its declared value buffer (4124 bytes); ours ends where the declared one does.

use super::mailbox::{self, Encoded, TagError, TagRequest};

/// `MAX_STRING` of vcgencmd: the value buffer, return code included.
pub const VALUE_BYTES: u32 = 4096;
/// Words of the value buffer.
const VALUE_WORDS: usize = VALUE_BYTES as usize / 4;
/// Word index of the tag in a one-tag buffer, after the buffer header.
const TAG_OFFSET: usize = 2;
/// Word index of the return code, after the tag header.
const RETURN_CODE_WORD: usize = TAG_OFFSET + 3;

/// Why a command produced no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GencmdError {
    #[error("command of {0} bytes does not fit the 4096-byte buffer")]
    TooLong(usize),
    #[error("{0}")]
    Tag(#[from] TagError),
    #[error("{0}")]
    Buffer(#[from] mailbox::BufferError),
    /// A non-zero return code or an `error=` answer, such as
    /// `error=1 error_msg="Command not registered"`.
    #[error("firmware answered {text:?} (return code {code})")]
    Failed { code: u32, text: String },
}

/// Packs bytes into host-endian words, as C code sees a `char` array overlaid on `u32`s.
fn pack(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|chunk| {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            u32::from_ne_bytes(word)
        })
        .collect()
}

/// The request buffer for `command`.
pub fn request(command: &str) -> Result<Vec<u32>, GencmdError> {
    let mut bytes = command.as_bytes().to_vec();
    bytes.push(0);
    if bytes.len() > VALUE_BYTES as usize - 4 {
        return Err(GencmdError::TooLong(command.len()));
    }
    let mut args = vec![0];
    args.extend(pack(&bytes));
    let Encoded { words, .. } = mailbox::encode(&[TagRequest {
        id: mailbox::tag::GENCMD,
        value_bytes: VALUE_BYTES,
        args,
    }]);
    Ok(words)
}

/// The text of a GENCMD value buffer: the bytes after its first (return-code) word up to the
/// first NUL. The command of a request, the answer of a reply.
pub fn text_after_code(value: &[u32]) -> String {
    let bytes: Vec<u8> = value
        .iter()
        .skip(1)
        .flat_map(|w| w.to_ne_bytes())
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Writes a reply into a GENCMD value buffer in place (for the simulator) and returns the reply
/// length in bytes: return code, text and its NUL.
pub fn write_reply(value: &mut [u32], code: u32, text: &str) -> u32 {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    let mut words = vec![code];
    words.extend(pack(&bytes));
    let n = words.len().min(value.len());
    value[..n].copy_from_slice(&words[..n]);
    (4 + bytes.len()) as u32
}

/// Decodes a reply buffer to the answer text; failures of the command are errors.
pub fn decode(buf: &[u32]) -> Result<String, GencmdError> {
    mailbox::check_buffer(buf)?;
    // Checks the response bit and that the answer was not cut.
    mailbox::tag_reply(buf, TAG_OFFSET)?;
    // vcgencmd reads the answer up to its NUL whatever length the firmware reports; so do we,
    // within the value buffer.
    let end = buf.len().min(RETURN_CODE_WORD + VALUE_WORDS);
    let value = buf.get(RETURN_CODE_WORD..end).unwrap_or_default();
    let Some(&code) = value.first() else {
        return Err(TagError::OutOfBounds.into());
    };
    let text = text_after_code(value);
    if code != 0 || text.starts_with("error=") {
        return Err(GencmdError::Failed { code, text });
    }
    Ok(text)
}

/// Parses `get_throttled`'s answer, `throttled=0x50000`.
pub fn parse_throttled(text: &str) -> Option<u32> {
    let hex = text.trim().strip_prefix("throttled=0x")?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::firmware::mailbox::{CODE_SUCCESS, RESPONSE_BIT};

    #[test]
    fn request_matches_vcgencmd_layout() {
        let buf = request("get_throttled").expect("fits");
        // The value buffer is exactly the 4096 bytes its size field declares, return code
        // included: (5 + 1024 + 1) * 4 = 4120 bytes. vcgencmd sends 4 bytes more (its string
        // area starts after the return code), which the firmware skips as padding.
        assert_eq!(buf.len(), 1030);
        assert_eq!(&buf[..6], &[4120, 0, 0x0003_0080, 4096, 0, 0]);
        let bytes: Vec<u8> = buf[6..10].iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&bytes, b"get_throttled\0\0\0");
        assert_eq!(buf[1029], 0);
        assert_eq!(text_after_code(&buf[5..]), "get_throttled");
        assert!(request(&"x".repeat(4091)).is_ok());
        assert_eq!(request(&"x".repeat(4092)), Err(GencmdError::TooLong(4092)));
    }

    fn answered(code: u32, text: &str) -> Vec<u32> {
        let mut buf = request("cmd").expect("fits");
        buf[1] = CODE_SUCCESS;
        let len = write_reply(&mut buf[5..5 + VALUE_WORDS], code, text);
        buf[4] = RESPONSE_BIT | len;
        buf
    }

    #[test]
    fn decodes_answers_and_failures() {
        assert_eq!(
            decode(&answered(0, "throttled=0x50005")).as_deref(),
            Ok("throttled=0x50005")
        );
        assert_eq!(
            decode(&answered(1, "error=1 error_msg=\"Command not registered\"")),
            Err(GencmdError::Failed {
                code: 1,
                text: "error=1 error_msg=\"Command not registered\"".into()
            })
        );
        assert!(matches!(
            decode(&answered(0, "error=2 error_msg=\"Invalid arguments\"")),
            Err(GencmdError::Failed { code: 0, .. })
        ));
        let mut unanswered = request("cmd").expect("fits");
        unanswered[1] = CODE_SUCCESS;
        assert_eq!(
            decode(&unanswered),
            Err(GencmdError::Tag(TagError::NotAnswered))
        );
        assert!(matches!(decode(&unanswered[..4]), Err(GencmdError::Tag(_))));
        assert!(matches!(
            decode(&answered(0, "x")[..5]),
            Err(GencmdError::Tag(_))
        ));
        let mut too_long = answered(0, "x");
        too_long[4] = RESPONSE_BIT | 5000;
        assert!(matches!(
            decode(&too_long),
            Err(GencmdError::Tag(TagError::Truncated { .. }))
        ));
    }

    #[test]
    fn parses_get_throttled() {
        assert_eq!(parse_throttled("throttled=0x0"), Some(0));
        assert_eq!(parse_throttled("throttled=0x50005\n"), Some(0x50005));
        for bad in [
            "",
            "throttled=",
            "throttled=0x",
            "throttled=50000",
            "throttled=0x+1",
        ] {
            assert_eq!(parse_throttled(bad), None, "{bad:?}");
        }
    }
}
