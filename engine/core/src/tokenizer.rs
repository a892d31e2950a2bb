//! Tokenizer built from the GGUF's own vocabulary with the `tokenizers` crate, matching
//! llama.cpp: GPT-2 byte-level BPE with the pre-tokenizer regexes the file names, and
//! SentencePiece-style vocabularies (merges derived from piece scores, byte fallback).
//! Decoding is ours: every id maps to its exact bytes, so streamed text can be cut on
//! UTF-8 boundaries.

use std::collections::HashMap;
use std::sync::Mutex;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::Gguf;

const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// Token texts that llama.cpp treats as end of generation whatever the metadata says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// GPT-2 style byte-level BPE (`tokenizer.ggml.model = gpt2`).
    Bpe,
    /// SentencePiece (`tokenizer.ggml.model = llama`).
    Spm,
}

pub struct Tokenizer {
    pub kind: Kind,
    /// Whether control tokens are parsed from text (trusted prompts, chat templates) or
    /// tokenized as plain text (untrusted text such as page content) is a flag of the
    /// tokenizer, set per call: a second copy for the other setting held Gemma 3's 262144
    /// pieces and 513511 merges twice.
    tk: Mutex<tokenizers::Tokenizer>,
    pieces: Vec<Vec<u8>>,
    control: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    eog: Vec<u32>,
    texts: Vec<String>,
}

fn pre_regexes(pre: &str) -> Result<Vec<&'static str>> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Ok(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" => vec![LLAMA3],
        "qwen2" | "qwen35" | "deepseek-r1-qwen" | "hunyuan" => vec![QWEN2],
        "smollm" | "codeshell" | "exaone" | "minerva-7b" => vec![r"\p{N}", GPT2],
        "gpt2" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "roberta-bpe" => vec![GPT2],
        "default" => vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        other => {
            return Err(Error::Unsupported(format!(
                "BPE pre-tokenizer `{other}` (supported: llama-bpe, qwen2, smollm, gpt-2, default)"
            )))
        }
    })
}

/// GPT-2's reversible byte <-> printable-char map.
fn byte_level_decoder() -> HashMap<char, u8> {
    let mut bytes: Vec<u8> = (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = bytes.iter().map(|&b| b as u32).collect();
    let mut n = 0;
    for b in 0..=255u8 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    chars.into_iter().map(|c| char::from_u32(c).unwrap()).zip(bytes).collect()
}

fn spm_piece_bytes(text: &str, ty: i64) -> Vec<u8> {
    if ty == TYPE_BYTE {
        if let Some(hex) = text.strip_prefix("<0x").and_then(|s| s.strip_suffix('>')) {
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                return vec![b];
            }
        }
    }
    text.replace('\u{2581}', " ").into_bytes()
}

impl Tokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let model = g.get_str("tokenizer.ggml.model").unwrap_or("");
        let texts: Vec<String> = g
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .ok_or_else(|| Error::Corrupt("the file has no tokenizer.ggml.tokens vocabulary".into()))?
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect();
        let n = texts.len();
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(a) => a.iter().map(|v| v.as_u64().map_or(1, |x| x as i64)).collect(),
            None => vec![1; n],
        };
        if types.len() != n {
            return Err(Error::Corrupt(format!("{} token types for {n} tokens", types.len())));
        }
        // The crate's own map type (a faster hash than std's, which dominated this in wasm),
        // built once: the SentencePiece merges below look pieces up in it, then it moves into
        // the BPE model.
        let vocab: tokenizers::models::bpe::Vocab = texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let id = |k: &str| g.get_u64(k).map(|v| v as u32).filter(|&v| (v as usize) < n);
        let eos = id("tokenizer.ggml.eos_token_id");
        let mut eog: Vec<u32> = [eos, id("tokenizer.ggml.eot_token_id"), id("tokenizer.ggml.eom_token_id")]
            .into_iter()
            .flatten()
            .chain(EOG_TEXTS.iter().filter_map(|t| vocab.get(*t).copied()))
            .collect();
        eog.sort_unstable();
        eog.dedup();
        let kind = match model {
            "gpt2" => Kind::Bpe,
            "llama" => Kind::Spm,
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer model `{other}` (supported: gpt2 byte-level BPE, llama SentencePiece)"
                )))
            }
        };
        let mut tk = match kind {
            Kind::Bpe => {
                let merges: Vec<(String, String)> = g
                    .get("tokenizer.ggml.merges")
                    .and_then(|v| v.as_array())
                    .ok_or_else(|| Error::Corrupt("BPE vocabulary without tokenizer.ggml.merges".into()))?
                    .iter()
                    .filter_map(|m| m.as_str()?.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
                    .collect();
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .ignore_merges(false)
                    .build()
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                let mut tk = tokenizers::Tokenizer::new(bpe);
                let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
                let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
                for re in pre_regexes(pre)? {
                    let split = Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false)
                        .map_err(|e| Error::Tokenizer(e.to_string()))?;
                    steps.push(split.into());
                }
                steps.push(ByteLevel::new(false, false, false).into());
                tk.with_pre_tokenizer(Some(Sequence::new(steps)));
                tk
            }
            Kind::Spm => {
                let scores: Vec<f32> = match g.get("tokenizer.ggml.scores").and_then(|v| v.as_array()) {
                    Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                    None => vec![0.0; n],
                };
                // llama.cpp merges the adjacent pair whose joined piece scores highest;
                // as BPE merges: every split of a normal piece into two vocabulary pieces,
                // ranked by the joined piece's score.
                let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
                for (i, t) in texts.iter().enumerate() {
                    if types[i] != 1 {
                        continue;
                    }
                    for (at, _) in t.char_indices().skip(1) {
                        let (a, b) = t.split_at(at);
                        if vocab.contains_key(a) && vocab.contains_key(b) {
                            merges.push((scores[i], i as u32, a.to_string(), b.to_string()));
                        }
                    }
                }
                merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
                let merges = merges.into_iter().map(|(_, _, a, b)| (a, b)).collect();
                let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
                if let Some(unk) = id("tokenizer.ggml.unknown_token_id") {
                    builder = builder.unk_token(texts[unk as usize].clone());
                }
                let bpe = builder.build().map_err(|e| Error::Tokenizer(e.to_string()))?;
                let mut tk = tokenizers::Tokenizer::new(bpe);
                let mut norms: Vec<NormalizerWrapper> = Vec::new();
                if g.get_bool("tokenizer.ggml.add_space_prefix").unwrap_or(true) {
                    norms.push(Prepend::new("\u{2581}".into()).into());
                }
                norms.push(Replace::new(" ", "\u{2581}").map_err(|e| Error::Tokenizer(e.to_string()))?.into());
                tk.with_normalizer(Some(NormSeq::new(norms)));
                tk
            }
        };
        let added: Vec<AddedToken> = texts
            .iter()
            .enumerate()
            .filter(|(i, _)| types[*i] == TYPE_CONTROL || types[*i] == TYPE_USER_DEFINED)
            .map(|(i, t)| AddedToken::from(t.clone(), types[i] == TYPE_CONTROL).normalized(false))
            .collect();
        tk.add_special_tokens(&added);

        let byte_map = byte_level_decoder();
        let pieces = texts
            .iter()
            .enumerate()
            .map(|(i, t)| match kind {
                _ if types[i] == TYPE_CONTROL || types[i] == TYPE_USER_DEFINED => t.clone().into_bytes(),
                Kind::Bpe => t.chars().map(|c| byte_map.get(&c).copied().unwrap_or(b'?')).collect(),
                Kind::Spm => spm_piece_bytes(t, types[i]),
            })
            .collect();
        let control: Vec<bool> = types.iter().map(|&t| t == TYPE_CONTROL).collect();
        Ok(Tokenizer {
            kind,
            tk: Mutex::new(tk),
            pieces,
            control,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            add_bos: g.get_bool("tokenizer.ggml.add_bos_token").unwrap_or(kind == Kind::Spm),
            eog,
            texts,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Tokenizes `text`. `parse_special` lets control tokens in the text (e.g.
    /// `<|im_start|>`) become control ids; keep it off for untrusted text. `add_bos`
    /// prepends BOS when the model asks for it.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut tk = self.tk.lock().unwrap_or_else(|e| e.into_inner());
        tk.set_encode_special_tokens(!parse_special);
        let enc = tk.encode_fast(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && self.add_bos {
            if let Some(b) = self.bos {
                ids.push(b);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The exact bytes a token stands for (control tokens: their text).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], |p| p.as_slice())
    }

    pub fn token_text(&self, id: u32) -> &str {
        self.texts.get(id as usize).map_or("", |s| s.as_str())
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.tk.lock().unwrap_or_else(|e| e.into_inner()).token_to_id(text)
    }

    /// Decodes ids to text, dropping control tokens (lossy only for invalid UTF-8).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter(|&&i| !self.is_control(i)).flat_map(|&i| self.token_bytes(i).to_vec()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of token bytes into text without ever splitting a UTF-8 character:
/// bytes of an unfinished character wait for the next token.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap());
                    match e.error_len() {
                        // Incomplete character at the end: keep it for later.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Invalid bytes can never complete: replace and go on.
                        Some(len) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + len);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
