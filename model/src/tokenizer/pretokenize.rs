//! Splitting text before BPE: first on special tokens, then with GPT-2's regex.

use std::sync::OnceLock;

use regex::Regex;

/// GPT-2's pre-tokenisation pattern. BPE never merges across the pieces it cuts, so a
/// word keeps its leading space and letters, digits and punctuation stay apart.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GPT-2's pattern without the lookahead branch `\s+(?!\S)`, which the linear-time `regex`
/// crate cannot run. [`PreTokens`] restores its effect by hand (several times faster
/// than a backtracking engine running the full pattern).
const PATTERN_WITHOUT_LOOKAHEAD: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

fn regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(PATTERN_WITHOUT_LOOKAHEAD).expect("pattern compiles"))
}

/// The pieces GPT-2's regex cuts `text` into; together they are exactly `text`.
pub(crate) fn pre_tokens(text: &str) -> PreTokens<'_> {
    PreTokens { text, pos: 0 }
}

/// Iterator over the pieces of [`GPT2_PATTERN`].
///
/// Every character is whitespace, a letter, a digit or "other", so some branch matches at
/// every position and the pieces tile the text. The only branch that differs is
/// `\s+(?!\S)`: on a whitespace run followed by a non-space, it stops one character
/// short, leaving the last whitespace character to start the next piece (a space then
/// joins the word after it via ` ?\p{L}+`; any other character stands alone via `\s+`).
/// So when `\s+` matches two or more characters before a non-space, the last one is
/// given back and matching restarts on it.
pub(crate) struct PreTokens<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Iterator for PreTokens<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let mut end = match regex().find_at(self.text, start) {
            Some(m) if m.start() == start => m.end(),
            // Cannot happen (see above); keep encoding lossless regardless.
            _ => self.text.len(),
        };
        let piece = &self.text[start..end];
        if end < self.text.len() && piece.chars().all(char::is_whitespace) {
            let last = piece.chars().next_back().map_or(0, char::len_utf8);
            if last < piece.len() {
                end -= last;
            }
        }
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// A part of the text: ordinary text, or the index of a special token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'t> {
    Text(&'t str),
    Special(usize),
}

/// Splits `text` around occurrences of `specials`: the leftmost match wins, and the
/// longest one when several start at the same place (as Hugging Face's added tokens do).
pub(crate) fn split_on_specials<'t>(text: &'t str, specials: &[String]) -> Vec<Segment<'t>> {
    let mut out = Vec::new();
    // Next occurrence of each special at or after `pos`, searched again only once passed.
    let mut next: Vec<Option<usize>> = specials.iter().map(|s| text.find(s.as_str())).collect();
    let mut pos = 0;
    loop {
        let best = next
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.map(|at| (at, std::cmp::Reverse(specials[i].len()), i)))
            .min();
        let Some((at, _, index)) = best else { break };
        if at > pos {
            out.push(Segment::Text(&text[pos..at]));
        }
        out.push(Segment::Special(index));
        pos = at + specials[index].len();
        for (i, slot) in next.iter_mut().enumerate() {
            if matches!(slot, Some(at) if *at < pos) {
                *slot = text[pos..].find(specials[i].as_str()).map(|p| p + pos);
            }
        }
    }
    if pos < text.len() {
        out.push(Segment::Text(&text[pos..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The full pattern, run by a backtracking engine: the reference for [`pre_tokens`].
    fn reference(text: &str) -> Vec<&str> {
        static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
        let re = RE.get_or_init(|| fancy_regex::Regex::new(GPT2_PATTERN).unwrap());
        re.find_iter(text).map(|m| m.unwrap().as_str()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn matches_the_full_gpt2_pattern(s in "[ a\t\n\r\u{a0}\u{3000}\u{85}1.'sé日🙂]{0,40}") {
            prop_assert_eq!(pre_tokens(&s).collect::<Vec<_>>(), reference(&s));
        }

        #[test]
        fn matches_the_full_gpt2_pattern_on_any_string(s in any::<String>()) {
            prop_assert_eq!(pre_tokens(&s).collect::<Vec<_>>(), reference(&s));
        }
    }

    #[test]
    fn splits_like_gpt2() {
        let pieces: Vec<&str> = pre_tokens("Hello world's  3.5  \n\nok").collect();
        assert_eq!(
            pieces,
            ["Hello", " world", "'s", " ", " 3", ".", "5", "  \n", "\n", "ok"]
        );
    }

    #[test]
    fn specials_split_leftmost_longest() {
        let specials = vec![
            "<|a|>".to_string(),
            "<|a|>x".to_string(),
            "<|b|>".to_string(),
        ];
        let segs = split_on_specials("hi<|a|>x<|b|><|a|>", &specials);
        assert_eq!(
            segs,
            [
                Segment::Text("hi"),
                Segment::Special(1),
                Segment::Special(2),
                Segment::Special(0)
            ]
        );
    }
}
