//! The pure decisions of a reply: checking a part, Telegram's HTML subset (escaping whatever is not
//! a supported tag or entity, balancing tags), splitting at 4,096 characters, where the reply
//! goes, what a call does given the record it finds, and per-chat pacing.

use super::model::*;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::protocol::worker::{ParseMode, ReplyArgs, ReplyResult};
use crate::queue::model::Payload;
use sha2::{Digest, Sha256};

// ---------- Telegram's HTML subset ----------

/// Tags Telegram's HTML parse mode accepts without attributes.
const PLAIN_TAGS: &[&str] = &["b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler", "pre"];

/// The UTF-16 length of a string (Telegram counts in UTF-16 code units).
pub fn len16(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The entity at the start of `s` (`&lt;`, `&gt;`, `&amp;`, `&quot;`, `&#NNN;`, `&#xHH;`), if any:
/// its length in bytes.
fn entity_len(s: &str) -> Option<usize> {
    let end = s.find(';')?;
    if end > 10 {
        return None;
    }
    let body = &s[1..end];
    let ok = matches!(body, "lt" | "gt" | "amp" | "quot")
        || body
            .strip_prefix("#x")
            .or_else(|| body.strip_prefix("#X"))
            .is_some_and(|h| !h.is_empty() && h.len() <= 6 && h.chars().all(|c| c.is_ascii_hexdigit()))
        || body
            .strip_prefix('#')
            .is_some_and(|d| !d.is_empty() && d.len() <= 7 && d.chars().all(|c| c.is_ascii_digit()));
    ok.then_some(end + 1)
}

/// Escape text for HTML, keeping the entities it already has.
fn escape_into(out: &mut String, s: &str) {
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '&' => match entity_len(&s[i..]) {
                Some(n) => {
                    out.push_str(&s[i..i + n]);
                    i += n;
                    continue;
                }
                None => out.push_str("&amp;"),
            },
            c => out.push(c),
        }
        i += c.len_utf8();
    }
}

/// A supported tag, normalized: `(name, closing, the tag as written out)`.
fn parse_tag(inner: &str) -> Option<(String, bool, String)> {
    if let Some(name) = inner.strip_prefix('/') {
        let name = name.trim().to_ascii_lowercase();
        let known = PLAIN_TAGS.contains(&name.as_str())
            || matches!(name.as_str(), "a" | "span" | "code" | "blockquote" | "tg-emoji");
        return known.then(|| (name.clone(), true, format!("</{name}>")));
    }
    let name_end = inner.find(|c: char| c.is_whitespace()).unwrap_or(inner.len());
    let name = inner[..name_end].to_ascii_lowercase();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return None;
    }
    let attrs = parse_attrs(&inner[name_end..])?;
    let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let quoted = |v: &str| {
        let mut o = String::new();
        escape_into(&mut o, v);
        o
    };
    let tag = match name.as_str() {
        n if PLAIN_TAGS.contains(&n) && attrs.is_empty() => format!("<{n}>"),
        "a" if attrs.len() == 1 && attr("href").is_some_and(|h| !h.trim().is_empty()) => {
            format!("<a href=\"{}\">", quoted(attr("href")?.trim()))
        }
        "span" if attrs.len() == 1 && attr("class") == Some("tg-spoiler") => "<span class=\"tg-spoiler\">".into(),
        "code" if attrs.is_empty() => "<code>".into(),
        "code"
            if attrs.len() == 1
                && attr("class").is_some_and(|c| {
                    c.strip_prefix("language-").is_some_and(|l| {
                        !l.is_empty()
                            && l.len() <= 32
                            && l.chars().all(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(c))
                    })
                }) =>
        {
            format!("<code class=\"{}\">", attr("class")?)
        }
        "blockquote" if attrs.is_empty() => "<blockquote>".into(),
        "blockquote" if attrs.len() == 1 && attr("expandable") == Some("") => "<blockquote expandable>".into(),
        "tg-emoji"
            if attrs.len() == 1
                && attr("emoji-id").is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit())) =>
        {
            format!("<tg-emoji emoji-id=\"{}\">", attr("emoji-id")?)
        }
        _ => return None,
    };
    Some((name, false, tag))
}

/// `k="v" k='v' k=v k` attributes; `None` when they do not parse.
fn parse_attrs(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let k_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let k = rest[..k_end].to_ascii_lowercase();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        rest = rest[k_end..].trim_start();
        let v = if let Some(r) = rest.strip_prefix('=') {
            let r = r.trim_start();
            let (v, after) = match r.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let end = r[1..].find(q)? + 1;
                    (&r[1..end], &r[end + 1..])
                }
                Some(_) => {
                    let end = r.find(char::is_whitespace).unwrap_or(r.len());
                    (&r[..end], &r[end..])
                }
                None => return None,
            };
            rest = after.trim_start();
            v.to_string()
        } else {
            String::new()
        };
        out.push((k, v));
    }
    Some(out)
}

/// Make text safe for Telegram's HTML parse mode: supported tags are kept (normalized), every
/// other `<`, `>` and `&` is escaped, closing tags that close nothing are escaped, tags left
/// open are closed (a closing tag that skips open ones closes those first). The result never
/// makes Telegram refuse the message for its markup.
pub fn sanitize_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut stack: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        if c == '<'
            && let Some(end) = s[i + 1..].find(['<', '>']).filter(|e| s.as_bytes()[i + 1 + e] == b'>')
            && let Some((name, closing, tag)) = parse_tag(&s[i + 1..i + 1 + end])
        {
            if !closing {
                stack.push(name);
                out.push_str(&tag);
                i += end + 2;
                continue;
            }
            if let Some(at) = stack.iter().rposition(|n| *n == name) {
                while stack.len() > at {
                    let n = stack.pop().unwrap_or_default();
                    out.push_str(&format!("</{n}>"));
                }
                i += end + 2;
                continue;
            }
        }
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => match entity_len(&s[i..]) {
                Some(n) => {
                    out.push_str(&s[i..i + n]);
                    i += n;
                    continue;
                }
                None => out.push_str("&amp;"),
            },
            c => out.push(c),
        }
        i += c.len_utf8();
    }
    while let Some(n) = stack.pop() {
        out.push_str(&format!("</{n}>"));
    }
    out
}

/// One unit of a text for splitting: a character, an entity (one visible character) or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom<'a> {
    Char(char),
    Entity(&'a str),
    Open { name: &'a str, raw: &'a str },
    Close { raw: &'a str },
}

impl Atom<'_> {
    fn raw_len16(&self) -> usize {
        match self {
            Atom::Char(c) => c.len_utf16(),
            Atom::Entity(r) | Atom::Open { raw: r, .. } | Atom::Close { raw: r } => len16(r),
        }
    }
    fn push_to(&self, out: &mut String) {
        match self {
            Atom::Char(c) => out.push(*c),
            Atom::Entity(r) | Atom::Open { raw: r, .. } | Atom::Close { raw: r } => out.push_str(r),
        }
    }
}

/// The atoms of sanitized HTML (every `<` starts a tag, every `&` an entity) or of plain text.
fn atoms(s: &str, html: bool) -> Vec<Atom<'_>> {
    if !html {
        return s.chars().map(Atom::Char).collect();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let n = match c {
            '<' => s[i..].find('>').map_or(1, |e| e + 1),
            '&' => s[i..].find(';').map_or(1, |e| e + 1),
            c => c.len_utf8(),
        };
        let raw = &s[i..i + n];
        out.push(match c {
            '<' if raw.starts_with("</") => Atom::Close { raw },
            '<' => {
                let end = raw[1..].find(|c: char| c.is_whitespace() || c == '>').map_or(raw.len() - 1, |e| e + 1);
                Atom::Open { name: &raw[1..end], raw }
            }
            '&' => Atom::Entity(raw),
            c => Atom::Char(c),
        });
        i += n;
    }
    out
}

fn closers_len(stack: &[(&str, &str)]) -> usize {
    stack.iter().map(|(n, _)| n.len() + 3).sum()
}

fn apply<'a>(stack: &mut Vec<(&'a str, &'a str)>, a: &Atom<'a>) {
    match a {
        Atom::Open { name, raw } => stack.push((name, raw)),
        Atom::Close { .. } => {
            stack.pop();
        }
        _ => {}
    }
}

/// Split a text into Telegram messages of at most `limit` UTF-16 units: at a paragraph, line or
/// word boundary when one lies in the second half of the window (a word boundary anywhere),
/// else at the limit; never inside a tag or an entity. With `html`, each message is balanced:
/// the tags open at a cut are closed at its end and reopened at the start of the next message.
/// Whitespace at the cuts is dropped; messages with nothing visible are left out.
pub fn split(text: &str, limit: usize, html: bool) -> Vec<String> {
    let atoms = atoms(text, html);
    let mut chunks = Vec::new();
    let mut stack: Vec<(&str, &str)> = Vec::new();
    let mut i = 0;
    while i < atoms.len() {
        while matches!(atoms.get(i), Some(Atom::Char(c)) if c.is_whitespace()) {
            i += 1;
        }
        if i >= atoms.len() {
            break;
        }
        let prefix: String = stack.iter().map(|(_, raw)| *raw).collect();
        let mut used = len16(&prefix);
        let mut w = stack.clone();
        let mut j = i;
        // Latest boundary after a word, a line, a paragraph.
        let mut cands: [Option<usize>; 3] = [None; 3];
        while j < atoms.len() {
            let a = &atoms[j];
            let mut w2 = w.clone();
            apply(&mut w2, a);
            if used + a.raw_len16() + closers_len(&w2) > limit {
                break;
            }
            used += a.raw_len16();
            w = w2;
            j += 1;
            if let Atom::Char(c) = a {
                if *c == '\n' {
                    let para = matches!(atoms.get(j.wrapping_sub(2)), Some(Atom::Char('\n')));
                    cands[if para { 2 } else { 1 }] = Some(j);
                } else if c.is_whitespace() {
                    cands[0] = Some(j);
                }
            }
        }
        let cut = if j >= atoms.len() {
            j
        } else {
            let half = i + (j - i) / 2;
            [cands[2].filter(|c| *c > half), cands[1].filter(|c| *c > half), cands[0].filter(|c| *c > i)]
                .into_iter()
                .flatten()
                .next()
                .unwrap_or(j.max(i + 1))
        };
        let mut body = prefix;
        let mut end_stack = stack.clone();
        let mut visible = false;
        for a in &atoms[i..cut] {
            a.push_to(&mut body);
            apply(&mut end_stack, a);
            visible |= matches!(a, Atom::Entity(_)) || matches!(a, Atom::Char(c) if !c.is_whitespace());
        }
        let mut chunk = body.trim_end().to_string();
        for (n, _) in end_stack.iter().rev() {
            chunk.push_str(&format!("</{n}>"));
        }
        if visible {
            chunks.push(chunk);
        }
        stack = end_stack;
        i = cut;
    }
    chunks
}

// ---------- a reply part ----------

/// Check a reply part and prepare its content: 400 for what the worker must fix, 413 for a text
/// over [`MAX_REPLY_TEXT`].
pub fn check(a: &ReplyArgs) -> AppResult<Content> {
    crate::ids::MessageRef::parse(&a.message_id)?;
    if a.lease_id.trim().is_empty() || a.lease_id.len() > 128 {
        return Err(AppError::validation("leaseId must be 1 to 128 characters"));
    }
    if a.part > MAX_PART {
        return Err(AppError::validation(format!("part must be 0 to {MAX_PART}")));
    }
    if a.reply_to_message_id.is_some_and(|r| r <= 0) {
        return Err(AppError::validation("replyToMessageId must be a positive Telegram message id"));
    }
    let html = a.parse_mode == Some(ParseMode::Html);
    match (&a.text, &a.audio) {
        (Some(_), Some(_)) => Err(AppError::validation("give either text or audio, not both")),
        (None, None) => Err(AppError::validation("give text or audio")),
        (Some(t), None) => {
            if t.trim().is_empty() {
                return Err(AppError::validation("text is empty: Telegram refuses empty messages"));
            }
            if len16(t) > MAX_REPLY_TEXT {
                return Err(AppError::PayloadTooLarge(format!(
                    "text is {} characters; a reply part takes at most {MAX_REPLY_TEXT}",
                    len16(t)
                )));
            }
            let chunks = if html {
                split(&sanitize_html(t), TELEGRAM_TEXT_LIMIT, true)
            } else {
                split(t, TELEGRAM_TEXT_LIMIT, false)
            };
            if chunks.is_empty() {
                return Err(AppError::validation("text has nothing visible once its markup is removed"));
            }
            Ok(Content::Text { chunks, html })
        }
        (None, Some(au)) => {
            let sid = au.storage_id.as_str();
            if sid.is_empty() || sid.len() > 64 || !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(AppError::validation("audio.storageId is not a storage id"));
            }
            if au.file_name.as_deref().is_some_and(|f| f.trim().is_empty() || f.len() > 255) {
                return Err(AppError::validation("audio.fileName must be 1 to 255 characters"));
            }
            let caption = match au.caption.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
                None => None,
                Some(c) => {
                    let c = if html { sanitize_html(c) } else { c.to_string() };
                    if len16(&c) > TELEGRAM_CAPTION_LIMIT {
                        return Err(AppError::validation(format!(
                            "audio.caption is over Telegram's {TELEGRAM_CAPTION_LIMIT} characters: send the text as a part of its own"
                        )));
                    }
                    Some(c)
                }
            };
            Ok(Content::Audio {
                storage_id: sid.to_string(),
                file_name: au.file_name.clone(),
                mime_type: au.mime_type.clone(),
                caption,
                html,
                voice: au.voice,
            })
        }
    }
}

/// The fingerprint of a part's content (not of the lease: a job retried under a new lease that
/// sends the same part finds it sent).
pub fn body_hash(a: &ReplyArgs) -> String {
    let v = serde_json::json!([a.part, a.text, a.audio, a.reply_to_message_id, a.parse_mode]);
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// Where the reply to a message goes: its Telegram chat (`telegramChatId`, else the sender), with
/// the bot that received it (`telegramBotIdentity`, else the agent's bot).
pub fn target(payload: &Payload, agent_bot: Option<&str>) -> AppResult<Target> {
    if payload.provider != "telegram" {
        return Err(AppError::validation(format!(
            "the message came from '{}', not Telegram: there is no chat to reply to",
            crate::ids::truncate(&payload.provider, 40)
        )));
    }
    let md = payload.metadata.as_ref();
    let get = |k: &str| md.and_then(|m| m.get(k)).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let chat_id = get("telegramChatId")
        .or_else(|| Some(payload.provider_user_id.trim().to_string()).filter(|v| !v.is_empty()))
        .ok_or_else(|| AppError::validation("the message names no Telegram chat"))?;
    let bot_identity = get("telegramBotIdentity")
        .or_else(|| agent_bot.map(str::to_string))
        .ok_or_else(|| AppError::validation("the agent has no Telegram bot (import its token first)"))?;
    Ok(Target { group: chat_id.starts_with('-'), chat_id, bot_identity })
}

/// How long to wait before the next message to a chat last written to at `last_sent_at`.
pub fn pace_wait(last_sent_at: Option<Millis>, group: bool, now: Millis) -> Millis {
    let interval = if group { GROUP_CHAT_INTERVAL_MS } else { PRIVATE_CHAT_INTERVAL_MS };
    last_sent_at.map_or(0, |t| (t + interval - now).clamp(0, interval))
}

/// What a call does, given the part's record (if any) and the previous part's last send.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The part has its final outcome: answer it, send nothing.
    Replay(ReplyResult),
    /// Come back later (429): another call is sending it, or Telegram asked to wait.
    RetryAfter { ms: u64, why: &'static str },
    /// Send chunks from `from` on (the ids of those before it are known), after `wait_ms`.
    Send { from: usize, ids: Vec<i64>, wait_ms: Millis, fresh: bool },
}

/// Decide what a call for a part does.
pub fn plan(
    rec: Option<&ReplyRecord>,
    prev_last_sent: Option<Millis>,
    body_hash: &str,
    group: bool,
    now: Millis,
) -> AppResult<Plan> {
    let wait = pace_wait(prev_last_sent, group, now);
    let Some(r) = rec else {
        return Ok(Plan::Send { from: 0, ids: Vec::new(), wait_ms: wait, fresh: true });
    };
    if r.body_hash != body_hash {
        return Err(AppError::conflict(format!(
            "part {} of message {} was already recorded with other content (an earlier attempt of the job answered it): nothing is sent; new content needs a new part number",
            r.part, r.message_id
        )));
    }
    if r.reply_state.final_status().is_some() {
        return Ok(Plan::Replay(result_of(r, true)));
    }
    if r.claim_until > now {
        return Ok(Plan::RetryAfter {
            ms: (r.claim_until - now).min(1_000) as u64,
            why: "another call is sending this part",
        });
    }
    if let Some(nb) = r.not_before.filter(|nb| *nb > now) {
        return Ok(Plan::RetryAfter { ms: (nb - now) as u64, why: "Telegram asked to wait" });
    }
    let wait = wait.max(pace_wait(r.last_sent_at, group, now));
    Ok(Plan::Send {
        from: r.telegram_message_ids.len(),
        ids: r.telegram_message_ids.clone(),
        wait_ms: wait,
        fresh: false,
    })
}

/// The answer for a record.
pub fn result_of(r: &ReplyRecord, replayed: bool) -> ReplyResult {
    ReplyResult {
        message_id: r.message_id.clone(),
        part: r.part,
        status: r.reply_state.final_status().unwrap_or(crate::protocol::worker::ReplyStatus::Failed),
        telegram_message_ids: r.telegram_message_ids.clone(),
        chunks: r.chunks,
        error: r.error.clone(),
        replayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::worker::{ReplyAudio, ReplyStatus};

    fn args(text: &str, html: bool) -> ReplyArgs {
        ReplyArgs {
            message_id: "01HZY3C6Q7W6B8R2N4M5K7J9P1:c1".into(),
            lease_id: "L".into(),
            part: 0,
            text: Some(text.into()),
            audio: None,
            reply_to_message_id: None,
            parse_mode: html.then_some(ParseMode::Html),
        }
    }

    #[test]
    fn stray_markup_is_escaped_and_supported_tags_kept() {
        assert_eq!(sanitize_html("a < b && c > d"), "a &lt; b &amp;&amp; c &gt; d");
        assert_eq!(sanitize_html("<b>bold</b> <i>it</i>"), "<b>bold</b> <i>it</i>");
        assert_eq!(
            sanitize_html("x &lt; y &amp; &#169; &#x1F600; &nbsp;"),
            "x &lt; y &amp; &#169; &#x1F600; &amp;nbsp;"
        );
        assert_eq!(sanitize_html("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(sanitize_html("<B>up</B>"), "<b>up</b>");
        assert_eq!(sanitize_html("<b>never closed"), "<b>never closed</b>");
        assert_eq!(sanitize_html("closes nothing</i>"), "closes nothing&lt;/i&gt;");
        assert_eq!(sanitize_html("<b><i>x</b>"), "<b><i>x</i></b>", "a close skipping an open tag closes it first");
        assert_eq!(
            sanitize_html(r#"<a href="https://x.y/?a=1&b=2">l</a>"#),
            r#"<a href="https://x.y/?a=1&amp;b=2">l</a>"#
        );
        assert_eq!(sanitize_html("<a>no href</a>"), "&lt;a&gt;no href&lt;/a&gt;");
        assert_eq!(
            sanitize_html(r#"<a href="x" onclick="y">z</a>"#),
            r#"&lt;a href=&quot;x&quot; onclick=&quot;y&quot;&gt;z&lt;/a&gt;"#.replace("&quot;", "\"")
        );
        assert_eq!(sanitize_html(r#"<span class="tg-spoiler">s</span>"#), r#"<span class="tg-spoiler">s</span>"#);
        assert_eq!(
            sanitize_html(r#"<pre><code class="language-rust">fn</code></pre>"#),
            r#"<pre><code class="language-rust">fn</code></pre>"#
        );
        assert_eq!(sanitize_html("1 <2> 3"), "1 &lt;2&gt; 3");
        assert_eq!(sanitize_html("if a<b and c>d"), "if a&lt;b and c&gt;d");
        assert_eq!(sanitize_html("<br/>"), "&lt;br/&gt;");
    }

    #[test]
    fn short_texts_are_one_chunk_and_long_ones_split_on_boundaries() {
        assert_eq!(split("hello", 4096, false), vec!["hello"]);
        let para = "word ".repeat(600); // 3,000 chars
        let text = format!("{}\n\n{}\n\n{}", para.trim(), para.trim(), para.trim());
        let parts = split(&text, 4096, false);
        assert_eq!(parts.len(), 3, "{:?}", parts.iter().map(|p| p.len()).collect::<Vec<_>>());
        assert!(parts.iter().all(|p| len16(p) <= 4096 && p.starts_with("word") && p.ends_with("word")));
        assert_eq!(parts.join(" "), text.replace("\n\n", " "), "nothing lost but the whitespace at the cuts");
        // No boundary at all: a hard cut at the limit.
        let solid = "x".repeat(10_000);
        let parts = split(&solid, 4096, false);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![4096, 4096, 1808]);
        // Lines beat words.
        let lines = format!("{}\n{}", "a ".repeat(1500).trim(), "b ".repeat(1500).trim());
        let parts = split(&lines, 4096, false);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].ends_with('a') && parts[1].starts_with('b'));
        // UTF-16: an emoji counts 2, never split in half.
        let emoji = "😀".repeat(3000);
        let parts = split(&emoji, 4096, false);
        assert!(parts.iter().all(|p| len16(p) <= 4096));
        assert_eq!(parts.concat(), emoji);
    }

    #[test]
    fn html_splits_never_cut_a_tag_or_entity_and_stay_balanced() {
        let inner = "bold &amp; brave ".repeat(400);
        let text = sanitize_html(&format!("<b>{inner}</b> <a href=\"https://e.x/\">tail</a>"));
        let parts = split(&text, 4096, true);
        assert!(parts.len() >= 2);
        for p in &parts {
            assert!(len16(p) <= 4096, "{}", len16(p));
            assert_eq!(sanitize_html(p), *p, "each part is valid, balanced HTML on its own");
            assert!(!p.ends_with('&') && !p.contains("&am ") && !p.ends_with("<b"));
        }
        assert!(parts[0].starts_with("<b>") && parts[0].ends_with("</b>"));
        assert!(parts[1].starts_with("<b>"), "the open tag is reopened: {}", &parts[1][..20]);
        // An entity right at the limit moves whole to the next part.
        let t = format!("{}&amp;", "y".repeat(4093));
        let parts = split(&t, 4096, true);
        assert_eq!(parts, vec!["y".repeat(4093), "&amp;".to_string()]);
        // Nothing visible: no chunk.
        assert!(split("<b> </b>", 4096, true).is_empty());
    }

    #[test]
    fn a_part_is_checked() {
        let c = check(&args("<b>hi", true)).unwrap();
        assert_eq!(c, Content::Text { chunks: vec!["<b>hi</b>".into()], html: true });
        let c = check(&args("<b>hi", false)).unwrap();
        assert_eq!(c, Content::Text { chunks: vec!["<b>hi".into()], html: false }, "plain text is sent as is");
        assert_eq!(check(&args("  ", false)).unwrap_err().code().as_str(), "ValidationError");
        assert_eq!(check(&args("<i></i>", true)).unwrap_err().code().as_str(), "ValidationError");
        assert_eq!(
            check(&args(&"x".repeat(MAX_REPLY_TEXT + 1), false)).unwrap_err().code().as_str(),
            "PayloadTooLarge"
        );
        let mut a = args("x", false);
        a.audio =
            Some(ReplyAudio { storage_id: "m1".into(), file_name: None, mime_type: None, caption: None, voice: false });
        assert!(check(&a).is_err(), "text and audio together");
        a.text = None;
        assert!(matches!(check(&a).unwrap(), Content::Audio { .. }));
        a.audio.as_mut().unwrap().caption = Some("c".repeat(1025));
        assert!(check(&a).is_err(), "caption over 1024");
        a.audio.as_mut().unwrap().storage_id = "../x".into();
        assert!(check(&a).is_err());
        let mut a = args("x", false);
        a.part = MAX_PART + 1;
        assert!(check(&a).is_err());
        let mut a = args("x", false);
        a.message_id = "nope".into();
        assert!(check(&a).is_err());
        let mut a = args("x", false);
        a.reply_to_message_id = Some(0);
        assert!(check(&a).is_err());
    }

    #[test]
    fn the_hash_follows_the_content_not_the_lease() {
        let a = args("x", false);
        let mut b = a.clone();
        b.lease_id = "other".into();
        assert_eq!(body_hash(&a), body_hash(&b));
        b.text = Some("y".into());
        assert_ne!(body_hash(&a), body_hash(&b));
        let mut c = a.clone();
        c.part = 1;
        assert_ne!(body_hash(&a), body_hash(&c));
    }

    #[test]
    fn the_target_is_the_receiving_bot_and_chat() {
        let mut p = crate::queue::model::Payload {
            provider: "telegram".into(),
            provider_user_id: "42".into(),
            message_text: "hi".into(),
            external_message_id: None,
            raw_update_json: None,
            metadata: Some(
                [("telegramChatId".to_string(), "-100".to_string()), ("telegramBotIdentity".into(), "7002".into())]
                    .into(),
            ),
            attachments: None,
        };
        assert_eq!(
            target(&p, Some("7001")).unwrap(),
            Target { chat_id: "-100".into(), bot_identity: "7002".into(), group: true }
        );
        p.metadata = None;
        assert_eq!(
            target(&p, Some("7001")).unwrap(),
            Target { chat_id: "42".into(), bot_identity: "7001".into(), group: false }
        );
        assert!(target(&p, None).is_err());
        p.provider = "system_push".into();
        assert!(target(&p, Some("7001")).is_err());
    }

    fn rec(state: ReplyState) -> ReplyRecord {
        ReplyRecord {
            pk: "C#c".into(),
            sk: "R#x#000".into(),
            message_id: "m".into(),
            conversation_id: "c".into(),
            part: 0,
            worker_id: "w".into(),
            lease_id: "L".into(),
            reply_state: state,
            body_hash: "h".into(),
            chat_id: "1".into(),
            chunks: 3,
            telegram_message_ids: vec![11],
            attempt_id: None,
            claim_until: 0,
            not_before: None,
            error: None,
            last_sent_at: Some(10_000),
            created_at: 0,
            updated_at: 0,
            ttl: 0,
        }
    }

    #[test]
    fn pacing_waits_out_the_chat_interval() {
        assert_eq!(pace_wait(None, false, 5_000), 0);
        assert_eq!(pace_wait(Some(4_700), false, 5_000), 700);
        assert_eq!(pace_wait(Some(4_700), true, 5_000), 2_700);
        assert_eq!(pace_wait(Some(1_000), false, 5_000), 0);
        assert_eq!(
            pace_wait(Some(9_000), false, 5_000),
            1_000,
            "a clock step back never waits longer than the interval"
        );
    }

    #[test]
    fn a_call_replays_resumes_or_waits() {
        assert_eq!(
            plan(None, None, "h", false, 0).unwrap(),
            Plan::Send { from: 0, ids: vec![], wait_ms: 0, fresh: true }
        );
        assert_eq!(
            plan(None, Some(9_500), "h", false, 10_000).unwrap(),
            Plan::Send { from: 0, ids: vec![], wait_ms: 500, fresh: true },
            "the previous part was just sent"
        );
        let sent = rec(ReplyState::Sent);
        match plan(Some(&sent), None, "h", false, 20_000).unwrap() {
            Plan::Replay(r) => {
                assert_eq!((r.status, r.replayed, r.telegram_message_ids), (ReplyStatus::Sent, true, vec![11]))
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(plan(Some(&sent), None, "other", false, 20_000).unwrap_err().code().as_str(), "Conflict");
        let mut s = rec(ReplyState::Sending);
        s.claim_until = 30_000;
        assert!(matches!(plan(Some(&s), None, "h", false, 20_000).unwrap(), Plan::RetryAfter { ms: 1_000, .. }));
        s.claim_until = 0;
        s.not_before = Some(23_000);
        assert!(matches!(plan(Some(&s), None, "h", false, 20_000).unwrap(), Plan::RetryAfter { ms: 3_000, .. }));
        assert_eq!(
            plan(Some(&s), None, "h", false, 23_000).unwrap(),
            Plan::Send { from: 1, ids: vec![11], wait_ms: 0, fresh: false },
            "a released record resumes after the chunks already sent"
        );
    }
}
