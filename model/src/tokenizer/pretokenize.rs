//! Splitting text before BPE: first on special tokens, then with GPT-2's regex.

use std::sync::OnceLock;

use fancy_regex::Regex;

/// GPT-2's pre-tokenisation pattern. BPE never merges across the pieces it cuts, so a
/// word keeps its leading space and letters, digits and punctuation stay apart.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

fn gpt2_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(GPT2_PATTERN).expect("GPT-2 pattern compiles"))
}

/// The pieces GPT-2's regex cuts `text` into; together they are exactly `text`.
pub(crate) fn pre_tokens(text: &str) -> PreTokens<'_> {
    PreTokens {
        text,
        matches: gpt2_regex().find_iter(text),
        end: 0,
    }
}

/// Iterator over pre-tokens. If the regex engine gives up (its backtracking limit), the
/// rest of the text becomes one piece: encoding then stays lossless, only less compact.
pub(crate) struct PreTokens<'t> {
    text: &'t str,
    matches: fancy_regex::Matches<'static, 't>,
    end: usize,
}

impl<'t> Iterator for PreTokens<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        if self.end >= self.text.len() {
            return None;
        }
        match self.matches.next() {
            Some(Ok(m)) if m.start() == self.end => {
                self.end = m.end();
                Some(m.as_str())
            }
            // A gap (cannot happen: the last alternative `\s+` and the others cover every
            // character) or an engine error: hand back the rest in one piece.
            _ => {
                let rest = &self.text[self.end..];
                self.end = self.text.len();
                Some(rest)
            }
        }
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
