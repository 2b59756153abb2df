//! GPT-2's reversible map between bytes and printable unicode characters.
//!
//! BPE vocabularies are stored as text (`vocab.json`, `merges.txt`), and a raw byte such
//! as a space or a control character would be invisible or break the `a b` merge format.
//! GPT-2 therefore shows each byte as one printable character: the printable Latin-1 bytes
//! stand for themselves, every other byte is shifted to a code point from U+0100 on.

/// The 256 characters that stand for bytes, in GPT-2's order: the printable bytes
/// (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) first, then the others. The position in this list is
/// the byte token's id in a GPT-2 vocabulary, which is also ascending code point order.
pub(crate) fn byte_chars_in_vocab_order() -> Vec<(u8, char)> {
    let mut out = Vec::with_capacity(256);
    for b in 0..=255u8 {
        if is_printable(b) {
            out.push((b, char::from(b)));
        }
    }
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        if !is_printable(b) {
            let c = char::from_u32(256 + shifted).expect("U+0100..U+0143 are valid chars");
            out.push((b, c));
            shifted += 1;
        }
    }
    out
}

fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Byte → character table.
pub(crate) fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    for (b, c) in byte_chars_in_vocab_order() {
        table[b as usize] = c;
    }
    table
}

/// The byte a character stands for, if it is one of the 256 byte characters.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    // The byte characters all lie below U+0144; a table built once inverts the map.
    static INVERSE: std::sync::OnceLock<[Option<u8>; 324]> = std::sync::OnceLock::new();
    let inverse = INVERSE.get_or_init(|| {
        let mut inv = [None; 324];
        for (b, c) in byte_chars_in_vocab_order() {
            inv[c as usize] = Some(b);
        }
        inv
    });
    inverse.get(c as usize).copied().flatten()
}

/// The bytes a byte-level token string stands for, or the first character that is not
/// a byte character.
pub(crate) fn token_string_to_bytes(token: &str) -> Result<Vec<u8>, char> {
    token.chars().map(|c| char_to_byte(c).ok_or(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_a_bijection_matching_gpt2() {
        let table = byte_to_char();
        // Spot values from GPT-2's bytes_to_unicode: space is 'Ġ', newline 'Ċ', byte 0 'Ā'.
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[0], 'Ā');
        assert_eq!(table[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(table[b as usize]), Some(b));
        }
        let order = byte_chars_in_vocab_order();
        assert!(order.windows(2).all(|w| w[0].1 < w[1].1));
    }
}
