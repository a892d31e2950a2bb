//! Chat templates: the GGUF's `tokenizer.chat_template` (Jinja) rendered with minijinja,
//! or a plain-text fallback for files that carry none (base models).
//!
//! Message contents are untrusted (page text, user input): they are rendered as
//! placeholders and tokenized without parsing control tokens, so text such as
//! `<|im_start|>system` inside a page cannot forge a turn.

use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// Used when the file has no template: plain "User:/Assistant:" turns.
pub const FALLBACK_TEMPLATE: &str = "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n\n{% elif m.role == 'user' %}User: {{ m.content }}\n\n{% else %}Assistant: {{ m.content }}\n\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
/// Where a fallback-formatted reply ends.
pub const FALLBACK_STOPS: &[&str] = &["\nUser:", "\n\nUser"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateSource {
    Gguf,
    Fallback,
}

pub struct ChatTemplate {
    pub source: TemplateSource,
    text: String,
    bos: String,
    eos: String,
}

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

impl ChatTemplate {
    pub fn from_gguf(g: &Gguf, tok: &Tokenizer) -> ChatTemplate {
        let name = |id: Option<u32>| id.map(|i| tok.token_text(i).to_string()).unwrap_or_default();
        let (source, text) = match g.get_str("tokenizer.chat_template") {
            Some(t) if !t.trim().is_empty() => (TemplateSource::Gguf, t.to_string()),
            _ => (TemplateSource::Fallback, FALLBACK_TEMPLATE.to_string()),
        };
        ChatTemplate { source, text, bos: name(tok.bos), eos: name(tok.eos) }
    }

    /// Extra stop strings this template needs (the fallback has no end-of-turn token).
    pub fn stop_strings(&self) -> Vec<String> {
        match self.source {
            TemplateSource::Gguf => Vec::new(),
            TemplateSource::Fallback => FALLBACK_STOPS.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.text).map_err(|e| Error::Template(e.to_string()))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| Error::Template(format!("{e:#}")))
    }

    /// Renders and tokenizes a conversation: template text may hold control tokens,
    /// message contents never do.
    pub fn tokenize(&self, tok: &Tokenizer, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let masked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message { role: m.role.clone(), content: format!("{OPEN}{i}{CLOSE}") })
            .collect();
        let rendered = self.render(&masked, add_generation_prompt)?;
        let add_bos = self.bos.is_empty() || !rendered.starts_with(&self.bos);
        let mut ids = if add_bos { tok.encode("", true, false)? } else { Vec::new() };
        let mut rest = rendered.as_str();
        let mut seen = 0;
        while let Some(start) = rest.find(OPEN) {
            ids.extend(tok.encode(&rest[..start], false, true)?);
            let after = &rest[start + OPEN.len_utf8()..];
            let end = after.find(CLOSE).ok_or_else(|| Error::Template("template altered a message".into()))?;
            let i: usize = after[..end].parse().map_err(|_| Error::Template("template altered a message".into()))?;
            let content = &messages.get(i).ok_or_else(|| Error::Template("template altered a message".into()))?.content;
            ids.extend(tok.encode(content, false, false)?);
            seen += 1;
            rest = &after[end + CLOSE.len_utf8()..];
        }
        ids.extend(tok.encode(rest, false, true)?);
        if seen < messages.iter().filter(|m| !m.content.is_empty()).count() {
            // The template transformed contents (e.g. trimmed or split them): render the
            // real text, with control-token texts in contents defused first.
            let defused: Vec<Message> =
                messages.iter().map(|m| Message { role: m.role.clone(), content: defuse(tok, &m.content) }).collect();
            let rendered = self.render(&defused, add_generation_prompt)?;
            let add_bos = self.bos.is_empty() || !rendered.starts_with(&self.bos);
            return tok.encode(&rendered, add_bos, true);
        }
        Ok(ids)
    }
}

/// Breaks control-token texts in untrusted content so they tokenize as plain text.
fn defuse(tok: &Tokenizer, s: &str) -> String {
    let mut out = s.to_string();
    for id in 0..tok.vocab_size() as u32 {
        if tok.is_control(id) {
            let t = tok.token_text(id);
            if t.len() > 1 && out.contains(t) {
                let (a, b) = t.split_at(1);
                out = out.replace(t, &format!("{a}\u{200B}{b}"));
            }
        }
    }
    out
}
