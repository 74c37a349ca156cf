//! Pure ingress rules (spec §7.2, §8.1, with W-1, W-6, W-7 and W-10's fixes). No I/O.

use super::model::{Candidate, IncomingMessage};
use crate::queue::model::AttachmentKind;
use serde_json::Value;
use std::collections::BTreeMap;

/// The header Telegram sends the webhook secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Length of a generated webhook secret (Telegram allows 1..=256 of `A-Z a-z 0-9 _ -`).
pub const SECRET_TOKEN_LEN: usize = 48;
/// The only update type the webhook asks for (W-8).
pub const ALLOWED_UPDATES: &[&str] = &["message"];
/// Most attachments one message may carry (W-7).
pub const MAX_ATTACHMENTS: usize = 10;
/// Telegram's download ceiling for bots, and ours (W-7).
pub const MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// MIME types ingress stores; anything else is left out of the message (and recorded).
pub const MIME_ALLOW_LIST: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "video/mp4",
    "audio/mpeg",
    "audio/ogg",
    "audio/mp4",
    "application/pdf",
    "text/plain",
];

const TOKEN_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// A webhook secret token from `SECRET_TOKEN_LEN` random bytes: each byte's low 6 bits pick one
/// of Telegram's 64 allowed characters (uniform: 256 is a multiple of 64).
pub fn secret_token_from(random: &[u8]) -> String {
    random.iter().take(SECRET_TOKEN_LEN).map(|b| TOKEN_ALPHABET[(b & 63) as usize] as char).collect()
}

/// Whether a header value could be a secret Telegram sends (its alphabet, 1..=256 characters).
pub fn is_secret_token_shaped(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

/// Compare two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) if n.as_i64().is_some_and(|i| i != 0) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

fn text_field(m: &Value, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

fn candidate(kind: AttachmentKind, v: &Value, mime: Option<String>) -> Option<Candidate> {
    let file_id = v.get("file_id").and_then(Value::as_str).filter(|s| !s.is_empty())?.to_string();
    Some(Candidate {
        kind,
        file_id,
        file_name: v.get("file_name").and_then(Value::as_str).map(str::to_string),
        mime_type: mime.or_else(|| v.get("mime_type").and_then(Value::as_str).map(str::to_string)),
        size_bytes: v.get("file_size").and_then(Value::as_u64),
    })
}

/// Media candidates in the order photo (largest size), video, audio, voice, document (§8.1).
pub fn candidates(m: &Value) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(p) = m.get("photo").and_then(Value::as_array).and_then(|a| a.last()) {
        out.extend(candidate(AttachmentKind::Photo, p, Some("image/jpeg".into())));
    }
    for (k, kind) in [
        ("video", AttachmentKind::Video),
        ("audio", AttachmentKind::Audio),
        ("voice", AttachmentKind::Voice),
        ("document", AttachmentKind::Document),
    ] {
        if let Some(v) = m.get(k) {
            let mut c = candidate(kind, v, None);
            if kind == AttachmentKind::Voice
                && let Some(c) = c.as_mut()
            {
                c.file_name = None;
            }
            out.extend(c);
        }
    }
    out
}

/// The message of an update, or `None` when ingress ignores the update (not a `message`, or no
/// chat or sender id: spec §7.2 step 3).
pub fn parse_update(update: &Value) -> Option<IncomingMessage> {
    let update_id = update.get("update_id").and_then(Value::as_i64)?;
    let m = update.get("message")?;
    let chat = m.get("chat")?;
    let from = m.get("from")?;
    let telegram_chat_id = id_string(chat.get("id"))?;
    let telegram_user_id = id_string(from.get("id"))?;
    let first = text_field(from, "first_name");
    let last = text_field(from, "last_name");
    let display_name = match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (f, l) => f.or(l),
    };
    Some(IncomingMessage {
        update_id,
        message_id: m.get("message_id").and_then(Value::as_i64),
        telegram_user_id,
        telegram_chat_id,
        chat_type: chat.get("type").and_then(Value::as_str).unwrap_or("private").to_string(),
        text: text_field(m, "text"),
        caption: text_field(m, "caption"),
        telegram_username: text_field(from, "username"),
        display_name,
        candidates: candidates(m),
    })
}

/// What a `/start` text is (spec §7.2 step 6; only `text`, never a caption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Not a `/start` command: an ordinary message.
    NotStart,
    /// `/start[@bot] <code>` with one token of 4..=128 `A-Z a-z 0-9 _ -`.
    Code(String),
    /// Any other text beginning with `/start`.
    Invalid,
}

pub fn parse_start(text: Option<&str>) -> Start {
    let Some(t) = text.map(str::trim) else { return Start::NotStart };
    let Some(rest) = t.strip_prefix("/start") else { return Start::NotStart };
    let rest = match rest.strip_prefix('@') {
        Some(r) => {
            let end = r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(r.len());
            if end == 0 {
                return Start::Invalid;
            }
            &r[end..]
        }
        None => rest,
    };
    if !rest.starts_with(char::is_whitespace) {
        return Start::Invalid;
    }
    let mut parts = rest.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(code), None)
            if (4..=128).contains(&code.len())
                && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Start::Code(code.to_string())
        }
        _ => Start::Invalid,
    }
}

pub fn kind_name(k: AttachmentKind) -> &'static str {
    match k {
        AttachmentKind::Photo => "photo",
        AttachmentKind::Video => "video",
        AttachmentKind::Audio => "audio",
        AttachmentKind::Voice => "voice",
        AttachmentKind::Document => "document",
    }
}

fn distinct_kinds(c: &[Candidate]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for k in c.iter().map(|c| kind_name(c.kind)) {
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}

/// The message text (spec §7.2 step 8): text, else caption, else a media placeholder; `None`
/// when there is nothing to say (stickers, locations, ...: ignored).
pub fn message_text(m: &IncomingMessage, attachments: &[Candidate]) -> Option<String> {
    if let Some(t) = m.text.clone().or_else(|| m.caption.clone()) {
        return Some(t);
    }
    if attachments.is_empty() {
        return None;
    }
    Some(format!("[telegram media] {} message", distinct_kinds(attachments).join(" + ")))
}

/// The metadata of an enqueued message (spec §7.2 step 9).
pub fn metadata(bot_identity: &str, m: &IncomingMessage, attachments: &[Candidate]) -> BTreeMap<String, String> {
    let mut md = BTreeMap::from([
        ("telegramBotIdentity".to_string(), bot_identity.to_string()),
        ("telegramChatId".to_string(), m.telegram_chat_id.clone()),
        ("telegramUserId".to_string(), m.telegram_user_id.clone()),
    ]);
    if let Some(id) = m.message_id {
        md.insert("telegramMessageId".into(), id.to_string());
    }
    if !attachments.is_empty() {
        md.insert("telegramMediaType".into(), distinct_kinds(attachments).join("+"));
        for a in attachments {
            let k = kind_name(a.kind);
            let key = format!("telegram{}{}FileId", k[..1].to_ascii_uppercase(), &k[1..]);
            md.insert(key, a.file_id.clone());
        }
    }
    md
}

/// The conversation of a Telegram chat with no binding (spec §2).
pub fn unbound_conversation_id(bot_identity: &str, chat_id: &str) -> String {
    format!("telegram:{bot_identity}:{chat_id}")
}

/// The idempotency key of an update's message: replays and stream retries enqueue once.
pub fn external_message_id(bot_identity: &str, update_id: i64) -> String {
    format!("tg:{bot_identity}:{update_id}")
}

/// Where a binding sends a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundTarget {
    pub consumer_user_id: String,
    pub agent_key: String,
    pub conversation_id: String,
}

/// A binding found by (bot, chat), with how it was paired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatBinding {
    pub target: BoundTarget,
    /// The pairing was done in this (group) chat: any member routes to it.
    pub group_paired: bool,
}

/// The routing decision of spec §7.2 step 7 (W-10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Bound(BoundTarget),
    /// No binding: the bot's own agent, in the chat's unbound conversation.
    Fallback {
        agent_key: String,
        conversation_id: String,
    },
    /// No binding and the deployment requires one (or the bot has no agent).
    NotLinked,
}

/// (bot, user) first; then (bot, chat) only for private chats or groups paired explicitly; then
/// the bot's agent unless a binding is required.
pub fn route(
    m: &IncomingMessage,
    bot_identity: &str,
    by_user: Option<BoundTarget>,
    by_chat: Option<ChatBinding>,
    bot_agent: Option<&str>,
    require_binding: bool,
) -> Route {
    if let Some(t) = by_user {
        return Route::Bound(t);
    }
    if let Some(c) = by_chat
        && (m.is_private() || c.group_paired)
    {
        return Route::Bound(c.target);
    }
    match bot_agent {
        Some(a) if !require_binding => Route::Fallback {
            agent_key: a.to_string(),
            conversation_id: unbound_conversation_id(bot_identity, &m.telegram_chat_id),
        },
        _ => Route::NotLinked,
    }
}

fn ext_mime(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "m4a" => "audio/mp4",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => return None,
    })
}

fn usable(v: Option<&str>) -> Option<String> {
    let v = v?.split(';').next()?.trim().to_ascii_lowercase();
    (!v.is_empty() && v != "application/octet-stream").then_some(v)
}

/// The MIME type of a file (spec §8.2 step 4.3): declared, file name, download's type, path.
pub fn resolve_mime(c: &Candidate, file_path: &str, download_type: Option<&str>) -> String {
    usable(c.mime_type.as_deref())
        .or_else(|| c.file_name.as_deref().and_then(ext_mime).map(str::to_string))
        .or_else(|| usable(download_type))
        .or_else(|| ext_mime(file_path).map(str::to_string))
        .unwrap_or_else(|| "application/octet-stream".to_string())
}

/// Why a media candidate is left out before any download, if it is.
pub fn precheck(c: &Candidate, index: usize) -> Option<String> {
    if index >= MAX_ATTACHMENTS {
        return Some(format!("more than {MAX_ATTACHMENTS} attachments"));
    }
    if c.size_bytes.is_some_and(|n| n > MAX_FILE_BYTES) {
        return Some(format!("{} is larger than 20 MB", kind_name(c.kind)));
    }
    None
}

pub fn mime_allowed(m: &str) -> bool {
    MIME_ALLOW_LIST.contains(&m)
}

/// A short reply to the Telegram user (W-14). Never carries the consumer's id (W-4).
pub fn reply_text(outcome: &str) -> Option<&'static str> {
    Some(match outcome {
        "paired" => "You are linked. Send a message to start.",
        "invalid_code" => "This pairing code is invalid or has expired. Ask for a new one.",
        "bad_start" => "To link this chat, open the link from the app (it carries a pairing code).",
        "rate_limited" => "Too many attempts. Please wait a few minutes and try again.",
        "not_linked" => "This chat is not linked yet. Open the pairing link from the app first.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(chat_type: &str) -> IncomingMessage {
        parse_update(&json!({"update_id": 5, "message": {"message_id": 9, "chat": {"id": -100, "type": chat_type},
            "from": {"id": 42, "first_name": "Ada", "username": "ada"}, "text": " hi "}}))
        .unwrap()
    }

    #[test]
    fn secret_tokens_use_telegrams_alphabet_and_compare_in_constant_time() {
        let t = secret_token_from(&[0u8, 63, 64, 255, 26, 52].repeat(8));
        assert_eq!(t.len(), SECRET_TOKEN_LEN);
        assert!(t.starts_with("A-A-a0"), "{t}");
        assert!(is_secret_token_shaped(&t));
        assert!(!is_secret_token_shaped("af:v1:1") && !is_secret_token_shaped(""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn updates_parse_and_others_are_ignored() {
        let m = msg("private");
        assert_eq!((m.telegram_user_id.as_str(), m.telegram_chat_id.as_str()), ("42", "-100"));
        assert_eq!(m.text.as_deref(), Some("hi"));
        assert_eq!(m.display_name.as_deref(), Some("Ada"));
        assert!(parse_update(&json!({"update_id": 1, "edited_message": {}})).is_none());
        assert!(parse_update(&json!({"update_id": 1, "message": {"chat": {"id": 0}, "from": {"id": 1}}})).is_none());
        assert!(parse_update(&json!({"message": {"chat": {"id": 1}, "from": {"id": 1}}})).is_none());
    }

    #[test]
    fn start_commands() {
        assert_eq!(parse_start(Some("/start ABCD2345")), Start::Code("ABCD2345".into()));
        assert_eq!(parse_start(Some("/start@my_bot  abc_-9 ")), Start::Code("abc_-9".into()));
        for bad in ["/start", "/startfoo", "/start A B", "/start abc", "/start@ x1234", "/start é1234"] {
            assert_eq!(parse_start(Some(bad)), Start::Invalid, "{bad}");
        }
        assert_eq!(parse_start(Some(&format!("/start {}", "a".repeat(129)))), Start::Invalid);
        assert_eq!(parse_start(Some("hello /start X")), Start::NotStart);
        assert_eq!(parse_start(None), Start::NotStart);
    }

    #[test]
    fn text_placeholder_and_metadata() {
        let u = json!({"update_id": 7, "message": {"chat": {"id": 1, "type": "private"}, "from": {"id": 1},
            "photo": [{"file_id": "small"}, {"file_id": "big", "file_size": 10}],
            "document": {"file_id": "d", "file_name": "a.pdf", "mime_type": "application/pdf"},
            "voice": {"mime_type": "audio/ogg"}}});
        let m = parse_update(&u).unwrap();
        assert_eq!(m.candidates.len(), 2, "the voice has no file_id");
        assert_eq!(m.candidates[0].file_id, "big");
        assert_eq!(message_text(&m, &m.candidates).unwrap(), "[telegram media] photo + document message");
        assert_eq!(message_text(&m, &[]), None);
        let md = metadata("77", &m, &m.candidates);
        assert_eq!(md["telegramMediaType"], "photo+document");
        assert_eq!(md["telegramPhotoFileId"], "big");
        assert_eq!(md["telegramDocumentFileId"], "d");
        assert_eq!(md["telegramBotIdentity"], "77");
        let mut with_caption = m.clone();
        with_caption.caption = Some("look".into());
        assert_eq!(message_text(&with_caption, &m.candidates).unwrap(), "look");
    }

    #[test]
    fn routing_prefers_user_then_private_chat_then_fallback() {
        let t = |a: &str| BoundTarget {
            consumer_user_id: "u".into(),
            agent_key: a.into(),
            conversation_id: format!("user-agent:{a}:u"),
        };
        let group = msg("group");
        let private = msg("private");
        assert_eq!(route(&group, "7", Some(t("a")), None, Some("bot"), false), Route::Bound(t("a")));
        let chat = ChatBinding { target: t("c"), group_paired: false };
        assert_eq!(
            route(&group, "7", None, Some(chat.clone()), Some("bot"), false),
            Route::Fallback { agent_key: "bot".into(), conversation_id: "telegram:7:-100".into() }
        );
        assert_eq!(route(&private, "7", None, Some(chat.clone()), None, true), Route::Bound(t("c")));
        let paired = ChatBinding { target: t("g"), group_paired: true };
        assert_eq!(route(&group, "7", None, Some(paired), None, true), Route::Bound(t("g")));
        assert_eq!(route(&group, "7", None, None, Some("bot"), true), Route::NotLinked);
        assert_eq!(route(&group, "7", None, None, None, false), Route::NotLinked);
        assert_eq!(unbound_conversation_id("7", "-100"), "telegram:7:-100");
        assert_eq!(external_message_id("7", 12), "tg:7:12");
        assert_eq!(crate::identity::rules::user_agent_conversation_id("a", "u"), "user-agent:a:u");
    }

    #[test]
    fn media_rules() {
        let c = |mime: Option<&str>, name: Option<&str>, size| Candidate {
            kind: AttachmentKind::Document,
            file_id: "f".into(),
            file_name: name.map(str::to_string),
            mime_type: mime.map(str::to_string),
            size_bytes: size,
        };
        assert_eq!(resolve_mime(&c(Some("Image/PNG"), None, None), "x", None), "image/png");
        assert_eq!(
            resolve_mime(&c(Some("application/octet-stream"), Some("a.PDF"), None), "x", None),
            "application/pdf"
        );
        assert_eq!(resolve_mime(&c(None, None, None), "x.bin", Some("audio/ogg; codecs=opus")), "audio/ogg");
        assert_eq!(resolve_mime(&c(None, None, None), "docs/f.mp4", None), "video/mp4");
        assert_eq!(resolve_mime(&c(None, None, None), "f", None), "application/octet-stream");
        assert!(mime_allowed("image/png") && !mime_allowed("application/x-msdownload"));
        assert_eq!(precheck(&c(None, None, Some(MAX_FILE_BYTES)), 0), None);
        assert!(precheck(&c(None, None, Some(MAX_FILE_BYTES + 1)), 0).unwrap().contains("20 MB"));
        assert!(precheck(&c(None, None, None), MAX_ATTACHMENTS).is_some());
        assert!(reply_text("paired").is_some() && reply_text("other").is_none());
    }
}
