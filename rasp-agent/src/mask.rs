//! The one masking layer: finds secrets and personal data in text (byte spans tagged with a
//! `SecretKind`) and renders masked samples that keep the kind and shape (`AKIA****…`,
//! `4111********1111`, `j***@example.com`). Every output of the agent passes through `Masker`.
//!
//! The scanner is a single pass over the bytes with hand-written detectors keyed on trigger
//! bytes (no regex): text with nothing that looks like a secret costs little more than a table
//! lookup per byte and returns `Cow::Borrowed` without allocating.
//!
//! Use: one `Masker` (built from the policy's `MaskPolicy`) at every edge where data leaves
//! the agent — `to_masked_json`/`mask_json` for serde records (journal, socket replies,
//! events, exports), `mask_str` for log fields and metric labels, `mask_argv` for command
//! lines, `mask_sql` for query evidence. Masking is the default for every `SecretKind`; a
//! policy opts one kind out with `MaskPolicy::keep` / `MaskPolicy::keeping(["email"])`.
//! A masked sample shows the kind's public prefix and at most four characters at each end
//! (`AKIA****************`, `4111********1111`, `eyJhbGci…****`, `j***@example.com`,
//! `password=****`); re-masking masked text leaves it unchanged.

use std::borrow::Cow;

/// What a masked span is. Each kind is here because it is a credential that grants access, or
/// personal data that regulations (PCI DSS, GDPR) forbid copying into logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// `AKIA`/`ASIA` + 16: the id half of an AWS key pair; alone it names an account and
    /// user, and it is what leaked-key scanners (and attackers) grep for.
    AwsAccessKeyId,
    /// 40 base64 characters near a key id or under `aws_secret_access_key`: the signing half.
    AwsSecretKey,
    /// The body of a PEM `-----BEGIN … PRIVATE KEY-----` block, also when cut short by a
    /// capture bound (a truncated key still leaks most of its bits).
    PrivateKey,
    /// A JSON Web Token (header decodes to JSON with `"alg"`): a bearer credential.
    Jwt,
    /// The credentials of an `Authorization: Bearer/Basic/…` header (Basic is a password).
    AuthorizationHeader,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// Slack tokens (`xoxb-`, `xoxa-`, `xoxp-`, `xoxr-`, `xoxs-`).
    SlackToken,
    /// Google API keys (`AIza` + 35).
    GoogleApiKey,
    /// Stripe live secret and restricted keys (`sk_live_`, `rk_live_`): they move money.
    StripeKey,
    /// The value of a `password=`/`secret:`/`token=`/`api_key=`… pair (config, query strings,
    /// JSON, environment variables, `--password=x` flags).
    KeyValueSecret,
    /// A password given as its own argv entry (`--password X`, mysql's `-pX`).
    ArgvPassword,
    /// The password of a `scheme://user:pass@host` URL (database DSNs, proxies, git remotes).
    UrlCredentials,
    /// A payment card number: 13-19 digits, known issuer prefix, Luhn-valid (PCI DSS PAN).
    PaymentCard,
    /// An e-mail address (personal data).
    Email,
    /// An IBAN with a valid mod-97 checksum and its country's length (personal data).
    Iban,
    /// The literal after `PASSWORD` in PostgreSQL `CREATE/ALTER ROLE|USER`.
    SqlRolePassword,
}

impl SecretKind {
    pub const ALL: [SecretKind; 16] = [
        SecretKind::AwsAccessKeyId,
        SecretKind::AwsSecretKey,
        SecretKind::PrivateKey,
        SecretKind::Jwt,
        SecretKind::AuthorizationHeader,
        SecretKind::GithubToken,
        SecretKind::SlackToken,
        SecretKind::GoogleApiKey,
        SecretKind::StripeKey,
        SecretKind::KeyValueSecret,
        SecretKind::ArgvPassword,
        SecretKind::UrlCredentials,
        SecretKind::PaymentCard,
        SecretKind::Email,
        SecretKind::Iban,
        SecretKind::SqlRolePassword,
    ];

    /// Stable name, as used in evidence and policies.
    pub fn name(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::AwsSecretKey => "aws_secret_key",
            SecretKind::PrivateKey => "private_key",
            SecretKind::Jwt => "jwt",
            SecretKind::AuthorizationHeader => "authorization_header",
            SecretKind::GithubToken => "github_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::StripeKey => "stripe_key",
            SecretKind::KeyValueSecret => "key_value_secret",
            SecretKind::ArgvPassword => "argv_password",
            SecretKind::UrlCredentials => "url_credentials",
            SecretKind::PaymentCard => "payment_card",
            SecretKind::Email => "email",
            SecretKind::Iban => "iban",
            SecretKind::SqlRolePassword => "sql_role_password",
        }
    }

    /// The kind a policy names (`SecretKind::name`).
    pub fn from_name(name: &str) -> Option<SecretKind> {
        SecretKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Personal data rather than a credential.
    pub fn is_personal_data(self) -> bool {
        matches!(
            self,
            SecretKind::PaymentCard | SecretKind::Email | SecretKind::Iban
        )
    }

    /// Recognised by its own format (prefix, checksum, structure), not only by the name of
    /// the field it sits in: such a find is evidence on its own (used by leak detections).
    pub fn is_structured(self) -> bool {
        !matches!(
            self,
            SecretKind::KeyValueSecret
                | SecretKind::ArgvPassword
                | SecretKind::SqlRolePassword
                | SecretKind::Email
        )
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// When two finds overlap, the more specific one names the merged span.
    fn specificity(self) -> u8 {
        match self {
            SecretKind::PrivateKey => 9,
            SecretKind::AwsAccessKeyId
            | SecretKind::AwsSecretKey
            | SecretKind::GithubToken
            | SecretKind::SlackToken
            | SecretKind::GoogleApiKey
            | SecretKind::StripeKey
            | SecretKind::Jwt => 8,
            SecretKind::UrlCredentials | SecretKind::SqlRolePassword => 7,
            SecretKind::AuthorizationHeader => 6,
            SecretKind::PaymentCard | SecretKind::Iban => 5,
            SecretKind::ArgvPassword | SecretKind::KeyValueSecret => 4,
            SecretKind::Email => 3,
        }
    }
}

/// One find: `text[start..end]` is the sensitive part (a key=value find covers the value, not
/// the key; an e-mail find covers the local part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretSpan {
    pub kind: SecretKind,
    pub start: usize,
    pub end: usize,
}

/// Finds secrets and personal data in text. Stateless and cheap to construct; kept as a type
/// so limits (and later, configured extra key names) have one home.
#[derive(Debug, Clone)]
pub struct SecretScanner {
    /// How far after an AWS key id a secret key is looked for.
    aws_secret_window: usize,
}

impl Default for SecretScanner {
    fn default() -> Self {
        SecretScanner {
            aws_secret_window: 256,
        }
    }
}

// Byte classes for the single pass. A byte with class 0 is skipped at the cost of one lookup.
const T_DIGIT: u8 = 1;
const T_UPPER: u8 = 2;
const T_LOWER: u8 = 3; // only the lower-case letters that start a token prefix
const T_EQ: u8 = 4; // '=' and ':'
const T_AT: u8 = 5;
const T_DASH: u8 = 6;
const T_QUOTE: u8 = 7;

const TRIGGER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = T_DIGIT;
        b += 1;
    }
    let mut b = b'A';
    while b <= b'Z' {
        t[b as usize] = T_UPPER;
        b += 1;
    }
    // g: ghp_/github_pat_, x: xox?-, s/r: sk_live_/rk_live_, e: eyJ (JWT), b: bearer/basic
    t[b'g' as usize] = T_LOWER;
    t[b'x' as usize] = T_LOWER;
    t[b's' as usize] = T_LOWER;
    t[b'r' as usize] = T_LOWER;
    t[b'e' as usize] = T_LOWER;
    t[b'b' as usize] = T_LOWER;
    t[b'=' as usize] = T_EQ;
    t[b':' as usize] = T_EQ;
    t[b'@' as usize] = T_AT;
    t[b'-' as usize] = T_DASH;
    t[b'\'' as usize] = T_QUOTE;
    t
};

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Word bytes (ASCII letters, digits, `_`) as a table: the scan's inner loop asks for every
/// byte, and a lookup is a fraction of the comparisons (measured with callgrind).
const WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
};

/// Part of a token for boundary purposes: a prefix match inside a longer word is not a token.
fn is_word(b: u8) -> bool {
    WORD[b as usize]
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fn run_len(bytes: &[u8], from: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    // A plain loop: the iterator chain (take + take_while + count) did not fold into one here.
    let rest = &bytes[from.min(bytes.len())..];
    let limit = rest.len().min(max);
    let mut n = 0;
    while n < limit && pred(rest[n]) {
        n += 1;
    }
    n
}

fn starts_with_ci(bytes: &[u8], at: usize, pat: &[u8]) -> bool {
    bytes
        .get(at..at + pat.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(pat))
}

impl SecretScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// All finds in `text`, sorted by start, overlaps merged (the more specific kind names the
    /// merged span). Allocates only when something is found.
    pub fn scan(&self, text: &str) -> Vec<SecretSpan> {
        let mut out = Vec::new();
        self.scan_into(text, &mut out);
        out
    }

    /// As `scan`, appending to a caller's buffer (reused across calls on hot paths).
    pub fn scan_into(&self, text: &str, out: &mut Vec<SecretSpan>) {
        let first = out.len();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let class = TRIGGER[b as usize];
            if is_word(b) {
                // Word detectors fire only where a word starts; inside a word nothing can
                // (separators are not word bytes), so the rest of the word is skipped whole.
                let boundary = i == 0 || !is_word(bytes[i - 1]);
                let next = match class {
                    T_DIGIT if boundary => self.at_digits(bytes, i, out),
                    T_UPPER if boundary => self.at_upper(bytes, i, out),
                    T_LOWER if boundary => self.at_lower(bytes, i, out),
                    _ => None,
                };
                match next {
                    Some(n) if n > i => i = n,
                    _ => i += 1 + run_len(bytes, i + 1, usize::MAX, is_word),
                }
                continue;
            }
            if class == 0 {
                i += 1;
                continue;
            }
            let next = match class {
                T_EQ => self.at_separator(bytes, i, out),
                T_AT => self.at_at(bytes, i, out),
                T_DASH => self.at_dash(bytes, i, out),
                T_QUOTE => self.at_quote(bytes, i, out),
                _ => None,
            };
            i = match next {
                Some(n) if n > i => n,
                _ => i + 1,
            };
        }
        merge_spans(&mut out[first..]);
        let merged = dedup_merged(&mut out[first..]);
        out.truncate(first + merged);
        // A span must fall on char boundaries for the masker to splice the string; every
        // detector matches ASCII at both ends, but a key=value value may end inside UTF-8.
        for s in &mut out[first..] {
            while s.end < bytes.len() && !text.is_char_boundary(s.end) {
                s.end += 1;
            }
            while s.start > 0 && !text.is_char_boundary(s.start) {
                s.start -= 1;
            }
        }
    }

    /// Card numbers; returns where to resume (past the digit run, so long numbers cost O(n)).
    fn at_digits(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        // A fraction's digits ("3.1415…") are not a card.
        if i >= 2 && bytes[i - 1] == b'.' && bytes[i - 2].is_ascii_digit() {
            return Some(i + run_len(bytes, i, usize::MAX, |b| b.is_ascii_digit()));
        }
        let mut digits = [0u8; 19];
        let mut n = 0usize;
        let mut j = i;
        let mut sep: Option<u8> = None;
        let mut group = 0usize;
        loop {
            match bytes.get(j) {
                Some(d) if d.is_ascii_digit() => {
                    if n == 19 {
                        // More than 19 digits: an id, a hash, a UUID made of digits — not a card.
                        return Some(j + run_len(bytes, j, usize::MAX, |b| b.is_ascii_digit()));
                    }
                    digits[n] = d - b'0';
                    n += 1;
                    group += 1;
                    j += 1;
                }
                Some(&s) if (s == b' ' || s == b'-') && n > 0 => {
                    // One separator kind, single, between groups of at least three digits
                    // (cards print as 4-4-4-4, 4-6-5, 4-6-4): "4 1 1 1 …" is a list.
                    if group < 3
                        || sep.is_some_and(|p| p != s)
                        || !bytes.get(j + 1).is_some_and(|d| d.is_ascii_digit())
                    {
                        break;
                    }
                    sep = Some(s);
                    group = 0;
                    j += 1;
                }
                _ => break,
            }
        }
        let end = j;
        // Glued to letters (hex ids) or continued as a decimal: not a card.
        let after_ok = match bytes.get(end) {
            None => true,
            Some(&c) if is_word(c) => false,
            Some(&b'.') => !bytes.get(end + 1).is_some_and(|d| d.is_ascii_digit()),
            Some(_) => true,
        };
        if after_ok && (13..=19).contains(&n) && card_prefix_ok(&digits[..n]) && luhn(&digits[..n])
        {
            out.push(SecretSpan {
                kind: SecretKind::PaymentCard,
                start: i,
                end,
            });
        }
        Some(end.max(i + 1))
    }

    fn at_upper(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let rest = &bytes[i..];
        // Dispatch on the first letter: most capitals start ordinary words.
        match rest[0] {
            b'A' => {}
            b'B' => {
                if starts_with_ci(bytes, i, b"bearer ") || starts_with_ci(bytes, i, b"basic ") {
                    return self.at_auth_scheme(bytes, i, out);
                }
            }
            _ => {
                if rest.len() >= 15 && rest[1].is_ascii_uppercase() {
                    return self.at_iban(bytes, i, out);
                }
                return None;
            }
        }
        if rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA") {
            let n = run_len(bytes, i + 4, 17, |b| {
                b.is_ascii_uppercase() || b.is_ascii_digit()
            });
            if n == 16 && !bytes.get(i + 20).is_some_and(|&b| is_word(b)) {
                out.push(SecretSpan {
                    kind: SecretKind::AwsAccessKeyId,
                    start: i,
                    end: i + 20,
                });
                self.aws_secret_near(bytes, i + 20, out);
                return Some(i + 20);
            }
        }
        if rest.starts_with(b"AIza") {
            let n = run_len(bytes, i + 4, 36, is_b64url);
            if n == 35 {
                out.push(SecretSpan {
                    kind: SecretKind::GoogleApiKey,
                    start: i,
                    end: i + 39,
                });
                return Some(i + 39);
            }
        }
        if rest.len() >= 15 && rest[1].is_ascii_uppercase() {
            return self.at_iban(bytes, i, out);
        }
        None
    }

    fn at_lower(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let rest = &bytes[i..];
        let (kind, prefix_len, min, charset): (SecretKind, usize, usize, fn(u8) -> bool) =
            if rest.starts_with(b"github_pat_") {
                (SecretKind::GithubToken, 11, 22, is_word)
            } else if rest.len() > 4
                && rest.starts_with(b"gh")
                && matches!(rest[2], b'p' | b'o' | b'u' | b's' | b'r')
                && rest[3] == b'_'
            {
                (SecretKind::GithubToken, 4, 30, is_alnum)
            } else if rest.len() > 5
                && rest.starts_with(b"xox")
                && matches!(rest[3], b'b' | b'a' | b'p' | b'r' | b's')
                && rest[4] == b'-'
            {
                (SecretKind::SlackToken, 5, 10, |b| is_alnum(b) || b == b'-')
            } else if rest.starts_with(b"sk_live_") || rest.starts_with(b"rk_live_") {
                (SecretKind::StripeKey, 8, 16, is_alnum)
            } else if rest.starts_with(b"eyJ") {
                return self.at_jwt(bytes, i, out);
            } else if starts_with_ci(bytes, i, b"bearer ") || starts_with_ci(bytes, i, b"basic ") {
                return self.at_auth_scheme(bytes, i, out);
            } else {
                return None;
            };
        let n = run_len(bytes, i + prefix_len, 256, charset);
        if n < min || bytes.get(i + prefix_len + n).is_some_and(|&b| is_word(b)) {
            return None;
        }
        let end = i + prefix_len + n;
        out.push(SecretSpan {
            kind,
            start: i,
            end,
        });
        Some(end)
    }

    /// `Bearer xyz` / `Basic dXNlcjpwYXNz`: the credential after the scheme word.
    fn at_auth_scheme(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let word = run_len(bytes, i, 8, |b| b.is_ascii_alphabetic());
        let start = i + word + run_len(bytes, i + word, 4, |b| b == b' ');
        let n = run_len(bytes, start, 8192, |b| {
            is_b64url(b) || matches!(b, b'.' | b'~' | b'+' | b'/' | b'=')
        });
        // Prose ("basic authentication") is one lower-case word; credentials are base64 or
        // random tokens with digits, mixed case or punctuation.
        let cred = &bytes[start..start + n];
        let digit = cred.iter().any(|b| b.is_ascii_digit());
        let mixed = cred.iter().any(|b| b.is_ascii_uppercase())
            && cred.iter().any(|b| b.is_ascii_lowercase());
        let punct = cred.iter().any(|b| !b.is_ascii_alphanumeric());
        if n < 8 || !(digit || mixed || punct) {
            return None;
        }
        out.push(SecretSpan {
            kind: SecretKind::AuthorizationHeader,
            start,
            end: start + n,
        });
        Some(start + n)
    }

    /// Three base64url parts, the first decoding to a JSON object with `"alg"`.
    fn at_jwt(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let h = run_len(bytes, i, 2048, is_b64url);
        if h < 10 || bytes.get(i + h) != Some(&b'.') {
            return None;
        }
        let p_start = i + h + 1;
        let p = run_len(bytes, p_start, 16384, is_b64url);
        if p == 0 || bytes.get(p_start + p) != Some(&b'.') {
            return None;
        }
        let s_start = p_start + p + 1;
        let s = run_len(bytes, s_start, 4096, is_b64url);
        let end = s_start + s;
        if bytes.get(end).is_some_and(|&b| is_word(b)) {
            return None;
        }
        let mut header = [0u8; 1536];
        let n = base64url_decode(&bytes[i..i + h], &mut header)?;
        let header = &header[..n];
        if header.first() != Some(&b'{') || !contains(header, b"\"alg\"") {
            return None;
        }
        out.push(SecretSpan {
            kind: SecretKind::Jwt,
            start: i,
            end,
        });
        Some(end)
    }

    /// `key=value`, `key: value`, `"key":"value"`, `--key=value` where the key names a secret.
    fn at_separator(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        if bytes[i] == b':' && bytes[i + 1..].starts_with(b"//") {
            return self.at_url(bytes, i, out);
        }
        // The key, backwards: an optional closing quote, then identifier bytes.
        let mut k_end = i;
        while k_end > 0 && bytes[k_end - 1] == b' ' && i - k_end < 4 {
            k_end -= 1;
        }
        if k_end > 0 && matches!(bytes[k_end - 1], b'"' | b'\'') {
            k_end -= 1;
        }
        let mut k_start = k_end;
        while k_start > 0
            && k_end - k_start < 64
            && (is_word(bytes[k_start - 1])
                || bytes[k_start - 1] == b'-'
                || bytes[k_start - 1] == b'.')
        {
            k_start -= 1;
        }
        if k_start == k_end {
            return None;
        }
        let key = &bytes[k_start..k_end];
        let kind = secret_key_kind(key)?;
        // The value: skip spaces and an opening quote.
        let mut v = i + 1;
        v += run_len(bytes, v, 8, |b| b == b' ' || b == b'\t');
        let quote = match bytes.get(v) {
            Some(&q) if q == b'"' || q == b'\'' => {
                v += 1;
                Some(q)
            }
            _ => None,
        };
        if kind == SecretKind::AuthorizationHeader {
            // Keep the scheme word visible: "Authorization: Bearer ****".
            let word = run_len(bytes, v, 16, |b| b.is_ascii_alphabetic());
            if word > 0 && bytes.get(v + word) == Some(&b' ') {
                v += word + 1;
            }
        }
        let len = match quote {
            Some(q) => quoted_len(bytes, v, q),
            None if kind == SecretKind::AuthorizationHeader => run_len(bytes, v, 8192, |b| {
                !matches!(b, b'\r' | b'\n' | b'"' | b'\'')
            }),
            None => run_len(bytes, v, 8192, |b| {
                !matches!(
                    b,
                    b'&' | b' '
                        | b'\t'
                        | b'\r'
                        | b'\n'
                        | b';'
                        | b','
                        | b'"'
                        | b'\''
                        | b'<'
                        | b'>'
                        | b'}'
                        | b')'
                        | b']'
                )
            }),
        };
        if len == 0 {
            return None;
        }
        out.push(SecretSpan {
            kind,
            start: v,
            end: v + len,
        });
        Some(v + len)
    }

    /// `scheme://user:pass@host`: the password.
    fn at_url(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let scheme = bytes[..i]
            .iter()
            .rev()
            .take(32)
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
            .count();
        if scheme == 0 {
            return None;
        }
        let u = i + 3;
        let n = run_len(bytes, u, 512, |b| {
            !matches!(
                b,
                b'/' | b'?'
                    | b'#'
                    | b'@'
                    | b' '
                    | b'\t'
                    | b'\r'
                    | b'\n'
                    | b'"'
                    | b'\''
                    | b'<'
                    | b'>'
            )
        });
        if bytes.get(u + n) != Some(&b'@') {
            return None;
        }
        let colon = bytes[u..u + n].iter().position(|&b| b == b':')?;
        let start = u + colon + 1;
        let end = u + n;
        if start == end {
            return None;
        }
        out.push(SecretSpan {
            kind: SecretKind::UrlCredentials,
            start,
            end,
        });
        Some(end)
    }

    /// An e-mail address: the local part is the span (the domain stays readable).
    fn at_at(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let is_local =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
        let local = bytes[..i]
            .iter()
            .rev()
            .take(64)
            .take_while(|&&b| is_local(b))
            .count();
        if local == 0 {
            return None;
        }
        let start = i - local;
        // `user:pass@host` is URL credentials, found by `at_url`.
        if start > 0 && bytes[start - 1] == b':' {
            return None;
        }
        if bytes[start] == b'.' {
            return None;
        }
        let d = i + 1;
        let n = run_len(bytes, d, 253, |b| {
            b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
        });
        let domain = &bytes[d..d + n];
        let domain = domain.strip_suffix(b".").unwrap_or(domain);
        let dot = domain.iter().rposition(|&b| b == b'.')?;
        let tld = &domain[dot + 1..];
        if dot == 0
            || tld.len() < 2
            || !tld.iter().all(|b| b.is_ascii_alphabetic())
            || domain.windows(2).any(|w| w == b"..")
        {
            return None;
        }
        out.push(SecretSpan {
            kind: SecretKind::Email,
            start,
            end: i,
        });
        Some(d + domain.len())
    }

    /// PEM private key blocks, also truncated ones.
    fn at_dash(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        const BEGIN: &[u8] = b"-----BEGIN ";
        if !bytes[i..].starts_with(BEGIN) {
            return None;
        }
        let l = i + BEGIN.len();
        let label_len = find(&bytes[l..bytes.len().min(l + 64)], b"-----")?;
        if !contains(&bytes[l..l + label_len], b"PRIVATE KEY") {
            return None;
        }
        let body = l + label_len + 5;
        let end = match find(&bytes[body..bytes.len().min(body + 65536)], b"-----END") {
            Some(e) => body + e,
            // Cut short: the body runs as far as PEM-body bytes do (base64, line breaks, the
            // escaped newlines of a JSON string, encryption headers).
            None => {
                body + run_len(bytes, body, usize::MAX, |b| {
                    is_b64(b)
                        || b.is_ascii_whitespace()
                        || matches!(b, b'=' | b'\\' | b':' | b',' | b'-')
                })
            }
        };
        // Line breaks alone are not key material (and keep re-masking a masked block a no-op).
        if bytes[body..end].iter().any(|b| b.is_ascii_alphanumeric()) {
            out.push(SecretSpan {
                kind: SecretKind::PrivateKey,
                start: body,
                end,
            });
        }
        Some(end.max(i + 1))
    }

    /// `PASSWORD 'x'` (PostgreSQL role statements), case-insensitive.
    fn at_quote(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let mut k = i;
        let spaces = bytes[..i]
            .iter()
            .rev()
            .take(8)
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        if spaces == 0 {
            return None;
        }
        k -= spaces;
        if k < 8 || !bytes[k - 8..k].eq_ignore_ascii_case(b"password") {
            return None;
        }
        if k > 8 && is_word(bytes[k - 9]) {
            return None;
        }
        let len = quoted_len(bytes, i + 1, b'\'');
        if len == 0 {
            return None;
        }
        out.push(SecretSpan {
            kind: SecretKind::SqlRolePassword,
            start: i + 1,
            end: i + 1 + len,
        });
        Some(i + 1 + len)
    }

    fn aws_secret_near(&self, bytes: &[u8], from: usize, out: &mut Vec<SecretSpan>) {
        let end = bytes.len().min(from + self.aws_secret_window);
        let mut j = from;
        while j < end {
            if !is_b64(bytes[j]) || (j > 0 && is_b64(bytes[j - 1])) {
                j += 1;
                continue;
            }
            let n = run_len(bytes, j, 41, is_b64);
            if n == 40 {
                let tok = &bytes[j..j + 40];
                let upper = tok.iter().any(|b| b.is_ascii_uppercase());
                let lower = tok.iter().any(|b| b.is_ascii_lowercase());
                if upper && lower {
                    out.push(SecretSpan {
                        kind: SecretKind::AwsSecretKey,
                        start: j,
                        end: j + 40,
                    });
                    return;
                }
            }
            j += n.max(1);
        }
    }

    fn at_iban(&self, bytes: &[u8], i: usize, out: &mut Vec<SecretSpan>) -> Option<usize> {
        let want = iban_length(&bytes[i..i + 2])?;
        if !(bytes[i + 2].is_ascii_digit() && bytes[i + 3].is_ascii_digit()) {
            return None;
        }
        // Compact or printed in groups of four separated by single spaces.
        let mut chars = [0u8; 34];
        let mut n = 0;
        let mut j = i;
        while j < bytes.len() && n < want {
            let b = bytes[j];
            if b.is_ascii_uppercase() || b.is_ascii_digit() {
                chars[n] = b;
                n += 1;
                j += 1;
            } else if b == b' ' && n % 4 == 0 && n > 0 {
                j += 1;
            } else {
                break;
            }
        }
        if n != want || bytes.get(j).is_some_and(|&b| is_word(b)) || !iban_checksum(&chars[..n]) {
            return None;
        }
        out.push(SecretSpan {
            kind: SecretKind::Iban,
            start: i,
            end: j,
        });
        Some(j)
    }
}

/// The kind a key name gives its value, if the name says it holds a secret.
fn secret_key_kind(key: &[u8]) -> Option<SecretKind> {
    let key = key[..key.len().min(64)].trim_ascii_start();
    let key = key.strip_prefix(b"--").unwrap_or(key);
    let is = |w: &[u8]| key.eq_ignore_ascii_case(w);
    if is(b"authorization") || is(b"proxy-authorization") {
        return Some(SecretKind::AuthorizationHeader);
    }
    const EXACT: [&[u8]; 6] = [b"pwd", b"pass", b"pw", b"db_pass", b"x-api-key", b"sid"];
    if EXACT.iter().any(|w| is(w)) {
        return Some(SecretKind::KeyValueSecret);
    }
    if !names_secret(key) {
        return None;
    }
    let aws = key
        .windows(10)
        .any(|w| w.eq_ignore_ascii_case(b"aws_secret") || w.eq_ignore_ascii_case(b"aws-secret"));
    if aws {
        Some(SecretKind::AwsSecretKey)
    } else {
        Some(SecretKind::KeyValueSecret)
    }
}

/// Whether a key contains a secret-naming word, in any case. One pass keyed on the first
/// letter, no copy: this runs at every `=` and `:` of every string the agent writes.
fn names_secret(key: &[u8]) -> bool {
    (0..key.len()).any(|k| {
        let rest = &key[k..];
        let words: &[&[u8]] = match key[k].to_ascii_lowercase() {
            b'p' => &[
                b"password",
                b"passwd",
                b"passphrase",
                b"private_key",
                b"private-key",
            ],
            // Session cookies are bearer credentials: `session`, `sessionid`, `jsessionid`.
            b's' => &[b"secret", b"session"],
            b't' => &[b"token"],
            b'a' => &[
                b"api_key",
                b"apikey",
                b"api-key",
                b"access_key",
                b"auth_key",
            ],
            b'c' => &[b"credential"],
            _ => return false,
        };
        words.iter().any(|w| {
            rest.get(..w.len())
                .is_some_and(|r| r.eq_ignore_ascii_case(w))
        })
    })
}

/// Length of a quoted value's contents starting at `from` (after the opening quote), up to
/// the closing quote; a backslash escapes, a doubled quote (SQL) continues the literal.
fn quoted_len(bytes: &[u8], from: usize, quote: u8) -> usize {
    let mut j = from;
    while j < bytes.len() && j - from < 8192 {
        let b = bytes[j];
        if b == b'\\' {
            j += 2;
            continue;
        }
        if b == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            break;
        }
        if b == b'\n' {
            break;
        }
        j += 1;
    }
    j.min(bytes.len()) - from
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Issuer prefixes (IIN ranges) and the lengths each network issues. Requiring a known
/// network on top of Luhn keeps timestamps (ms epochs start with 1), ids and phone numbers
/// out: one random digit string in ten passes Luhn, far fewer also match a network.
fn card_prefix_ok(d: &[u8]) -> bool {
    let n = d.len();
    let p2 = u32::from(d[0]) * 10 + u32::from(d[1]);
    let p3 = p2 * 10 + u32::from(d[2]);
    let p4 = p3 * 10 + u32::from(d[3]);
    match d[0] {
        4 => n == 13 || n == 16 || n == 19,          // Visa
        5 => (51..=55).contains(&p2) && n == 16,     // Mastercard
        2 => (2221..=2720).contains(&p4) && n == 16, // Mastercard 2-series
        3 => {
            ((p2 == 34 || p2 == 37) && n == 15)                      // Amex
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&n)) // JCB
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&n)) // Diners
        }
        6 => {
            (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62)
                && (16..=19).contains(&n) // Discover, UnionPay
        }
        _ => false,
    }
}

/// IBAN lengths of the countries most likely in our traffic (SEPA and a few more); an
/// unknown country is not an IBAN here, which keeps upper-case ids (`AB12…`) out.
fn iban_length(cc: &[u8]) -> Option<usize> {
    Some(match cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AT" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"EE" => 20,
        b"ES" => 24,
        b"FI" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GR" => 27,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MT" => 31,
        b"NL" => 18,
        b"NO" => 15,
        b"PL" => 28,
        b"PT" => 25,
        b"RO" => 24,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TR" => 26,
        b"UA" => 29,
        _ => return None,
    })
}

fn iban_checksum(chars: &[u8]) -> bool {
    // ISO 13616: move the first four to the end, letters to 10..35, remainder mod 97 is 1.
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Decodes unpadded base64url into `out`; `None` if it does not fit or is not base64url.
fn base64url_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut n = 0;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    Some(n)
}

/// Sorts by start and merges overlapping spans in place (the more specific kind wins).
fn merge_spans(spans: &mut [SecretSpan]) {
    spans.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
}

/// After `merge_spans`' sort, folds overlaps into the first of each group; returns how many
/// spans remain at the front.
fn dedup_merged(spans: &mut [SecretSpan]) -> usize {
    if spans.is_empty() {
        return 0;
    }
    let mut w = 0;
    for r in 1..spans.len() {
        let cur = spans[r];
        let last = &mut spans[w];
        if cur.start < last.end {
            last.end = last.end.max(cur.end);
            if cur.kind.specificity() > last.kind.specificity() {
                last.kind = cur.kind;
            }
        } else {
            w += 1;
            spans[w] = cur;
        }
    }
    w + 1
}

/// Per kind: mask it (the default) or keep it as is (an operator's explicit opt-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskAction {
    Mask,
    Keep,
}

/// Which kinds are masked. The default masks everything; `keep` is the policy opt-in to
/// unmasked output for one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaskPolicy {
    keep: u32,
}

impl MaskPolicy {
    pub fn mask_all() -> Self {
        MaskPolicy { keep: 0 }
    }

    pub fn keep(mut self, kind: SecretKind) -> Self {
        self.keep |= kind.bit();
        self
    }

    pub fn mask(mut self, kind: SecretKind) -> Self {
        self.keep &= !kind.bit();
        self
    }

    /// A policy's opt-in list (`keep_unmasked: [email, payment_card]`); an unknown name is
    /// returned as the error so the policy loader can point at it.
    pub fn keeping<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        names.into_iter().try_fold(MaskPolicy::mask_all(), |p, n| {
            SecretKind::from_name(n).map(|k| p.keep(k)).ok_or(n)
        })
    }

    pub fn action(&self, kind: SecretKind) -> MaskAction {
        if self.keep & kind.bit() != 0 {
            MaskAction::Keep
        } else {
            MaskAction::Mask
        }
    }
}

/// Renders masked text: the scanner's finds replaced by samples that keep kind and shape.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    scanner: SecretScanner,
    policy: MaskPolicy,
}

const STARS: &str = "****";

impl Masker {
    pub fn new(policy: MaskPolicy) -> Self {
        Masker {
            scanner: SecretScanner::default(),
            policy,
        }
    }

    pub fn scanner(&self) -> &SecretScanner {
        &self.scanner
    }

    pub fn policy(&self) -> MaskPolicy {
        self.policy
    }

    /// `text` with every find masked; borrowed (no allocation) when nothing is masked.
    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans = Vec::new();
        self.scanner.scan_into(text, &mut spans);
        self.apply(text, &spans)
    }

    /// Splices masked renderings of `spans` (sorted, disjoint, from the scanner) into `text`.
    pub fn apply<'a>(&self, text: &'a str, spans: &[SecretSpan]) -> Cow<'a, str> {
        let mut out: Option<String> = None;
        let mut pos = 0;
        for s in spans {
            if self.policy.action(s.kind) == MaskAction::Keep || s.start < pos {
                continue;
            }
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[pos..s.start]);
            render_masked(s.kind, &text[s.start..s.end], o);
            pos = s.end;
        }
        match out {
            Some(mut o) => {
                o.push_str(&text[pos..]);
                Cow::Owned(o)
            }
            None => Cow::Borrowed(text),
        }
    }

    /// A masked sample of one secret value (the whole value is taken as of `kind`).
    pub fn sample(&self, kind: SecretKind, value: &str) -> String {
        if self.policy.action(kind) == MaskAction::Keep {
            return value.to_owned();
        }
        let mut o = String::new();
        render_masked(kind, value, &mut o);
        o
    }

    /// Masks a command line. Each entry goes through `mask_str`; in addition a secret-naming
    /// flag followed by a separate value (`--password X`, `-p X` of sshpass) masks the value,
    /// and mysql-family clients' glued `-pSECRET` is masked.
    pub fn mask_argv(&self, argv: &[String]) -> Vec<String> {
        let program = argv
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
            .unwrap_or("");
        let mysql_like = program.starts_with("mysql") || program.starts_with("mariadb");
        let mut out = Vec::with_capacity(argv.len());
        let mut mask_next = false;
        for (k, arg) in argv.iter().enumerate() {
            let masked = if mask_next && !arg.starts_with('-') {
                Cow::Owned(self.sample(SecretKind::ArgvPassword, arg))
            } else if mysql_like && k > 0 && arg.len() > 2 && arg.starts_with("-p") {
                let mut s = String::from("-p");
                s.push_str(&self.sample(SecretKind::ArgvPassword, &arg[2..]));
                Cow::Owned(s)
            } else {
                self.mask_str(arg)
            };
            mask_next = k > 0 && flag_takes_secret(arg, program);
            out.push(masked.into_owned());
        }
        out
    }

    /// Serializes `value` and masks the result: the one call for evidence, journal lines and
    /// socket replies built from serde types.
    pub fn to_masked_json<T: serde::Serialize>(
        &self,
        value: &T,
    ) -> Result<serde_json::Value, serde_json::Error> {
        let mut v = serde_json::to_value(value)?;
        self.mask_json(&mut v);
        Ok(v)
    }

    /// Masks every string of a JSON value in place; under a secret-naming key the whole value
    /// (string or number) is masked.
    pub fn mask_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(m) = self.mask_str(s) {
                    *s = m;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_json(v)),
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match secret_key_kind(k.as_bytes()) {
                        Some(kind)
                            if self.policy.action(kind) == MaskAction::Mask
                                && (v.is_string() || v.is_number()) =>
                        {
                            let shown = match v {
                                Value::String(s) => self.sample(kind, s),
                                _ => STARS.to_owned(),
                            };
                            *v = Value::String(shown);
                        }
                        _ => self.mask_json(v),
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Masks a SQL query while keeping its structure: string literals (standard, `E''`,
    /// dollar-quoted) are scanned and masked where they hold secrets or personal data; a
    /// literal after `PASSWORD` or compared with a secret-named column is masked whole; card
    /// numbers written as numeric literals are masked; comments are scanned like text.
    pub fn mask_sql<'a>(&self, query: &'a str) -> Cow<'a, str> {
        let bytes = query.as_bytes();
        let mut spans: Vec<SecretSpan> = Vec::new();
        let mut scratch: Vec<SecretSpan> = Vec::new();
        let mut i = 0;
        let mut code_start = 0;
        let scan_code =
            |from: usize, to: usize, spans: &mut Vec<SecretSpan>, scratch: &mut Vec<SecretSpan>| {
                scratch.clear();
                self.scanner.scan_into(&query[from..to], scratch);
                spans.extend(
                    scratch
                        .iter()
                        .filter(|s| s.kind == SecretKind::PaymentCard)
                        .map(|s| SecretSpan {
                            kind: s.kind,
                            start: s.start + from,
                            end: s.end + from,
                        }),
                );
            };
        while i < bytes.len() {
            let b = bytes[i];
            let literal = match b {
                b'\'' => {
                    let escapes = i > 0
                        && matches!(bytes[i - 1], b'E' | b'e')
                        && (i < 2 || !is_word(bytes[i - 2]));
                    Some((i + 1, sql_quoted_end(bytes, i + 1, escapes), 1))
                }
                b'$' if i == 0 || !is_word(bytes[i - 1]) => dollar_tag(bytes, i).map(|tag| {
                    let body = i + tag.len();
                    let end = find(&bytes[body..], tag).map_or(bytes.len(), |e| body + e);
                    (body, end, tag.len())
                }),
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    let end = bytes[i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(bytes.len(), |e| i + e);
                    scan_code(code_start, i, &mut spans, &mut scratch);
                    self.scan_comment(query, i, end, &mut spans, &mut scratch);
                    i = end;
                    code_start = end;
                    continue;
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    let end = find(&bytes[i + 2..], b"*/").map_or(bytes.len(), |e| i + 2 + e + 2);
                    scan_code(code_start, i, &mut spans, &mut scratch);
                    self.scan_comment(query, i, end, &mut spans, &mut scratch);
                    i = end;
                    code_start = end;
                    continue;
                }
                b'"' => {
                    // A quoted identifier: skipped, never masked.
                    i = sql_quoted_end(bytes, i + 1, false).saturating_add(1);
                    continue;
                }
                _ => None,
            };
            let Some((body, end, close_len)) = literal else {
                i += 1;
                continue;
            };
            scan_code(code_start, i, &mut spans, &mut scratch);
            // Char boundaries: literals open and close on ASCII, so these slices are valid.
            if end > body {
                if sql_literal_is_secret(bytes, i) {
                    spans.push(SecretSpan {
                        kind: SecretKind::SqlRolePassword,
                        start: body,
                        end,
                    });
                } else {
                    scratch.clear();
                    self.scanner.scan_into(&query[body..end], &mut scratch);
                    spans.extend(scratch.iter().map(|s| SecretSpan {
                        kind: s.kind,
                        start: s.start + body,
                        end: s.end + body,
                    }));
                }
            }
            i = (end + close_len).min(bytes.len()).max(i + 1);
            code_start = i;
        }
        scan_code(
            code_start.min(bytes.len()),
            bytes.len(),
            &mut spans,
            &mut scratch,
        );
        spans.sort_unstable_by_key(|s| s.start);
        self.apply(query, &spans)
    }

    fn scan_comment(
        &self,
        query: &str,
        from: usize,
        to: usize,
        spans: &mut Vec<SecretSpan>,
        scratch: &mut Vec<SecretSpan>,
    ) {
        scratch.clear();
        self.scanner.scan_into(&query[from..to], scratch);
        spans.extend(scratch.iter().map(|s| SecretSpan {
            kind: s.kind,
            start: s.start + from,
            end: s.end + from,
        }));
    }
}

/// Does this flag take a secret as its next argv entry?
fn flag_takes_secret(arg: &str, program: &str) -> bool {
    let flag = arg.trim_start_matches('-');
    if arg.starts_with("--") && !arg.contains('=') {
        return secret_key_kind(flag.as_bytes()).is_some();
    }
    // Single-dash `-p X`: sshpass and redis-cli's `-a X` take a password, curl's `-u X` is
    // `user:password`; mysql's bare `-p` prompts instead, so its next entry is a database
    // name and stays.
    (arg == "-p" && program == "sshpass")
        || (arg == "-a" && program == "redis-cli")
        || ((arg == "-u" || arg == "--user") && program == "curl")
}

/// End (index of the closing quote, or the text's end) of a SQL string starting at `from`.
fn sql_quoted_end(bytes: &[u8], from: usize, backslash_escapes: bool) -> usize {
    let quote = if from > 0 { bytes[from - 1] } else { b'\'' };
    let mut j = from;
    while j < bytes.len() {
        let b = bytes[j];
        if backslash_escapes && b == b'\\' {
            j += 2;
            continue;
        }
        if b == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return j;
        }
        j += 1;
    }
    bytes.len()
}

/// `$tag$` or `$$` at `i`: the tag including both dollars.
fn dollar_tag(bytes: &[u8], i: usize) -> Option<&[u8]> {
    let n = run_len(bytes, i + 1, 64, is_word);
    if bytes.get(i + 1 + n) == Some(&b'$') && !bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit())
    {
        Some(&bytes[i..i + n + 2])
    } else {
        None
    }
}

/// Whether the literal opening at `quote` is a password by context: `PASSWORD '…'`,
/// `password = '…'`, `secret_token = '…'`.
fn sql_literal_is_secret(bytes: &[u8], quote: usize) -> bool {
    let mut k = quote;
    while k > 0 && bytes[k - 1].is_ascii_whitespace() {
        k -= 1;
    }
    let mut compared = false;
    if k > 0 && bytes[k - 1] == b'=' {
        compared = true;
        k -= 1;
        while k > 0 && bytes[k - 1].is_ascii_whitespace() {
            k -= 1;
        }
    }
    let word = bytes[..k]
        .iter()
        .rev()
        .take(64)
        .take_while(|&&b| is_word(b))
        .count();
    let ident = &bytes[k - word..k];
    if ident.eq_ignore_ascii_case(b"password") {
        return true;
    }
    compared && secret_key_kind(ident).is_some()
}

/// Writes the masked rendering of one secret `value` of `kind` into `out`.
fn render_masked(kind: SecretKind, value: &str, out: &mut String) {
    match kind {
        // Prefix names the key type; the rest keeps its length so the shape is recognisable.
        SecretKind::AwsAccessKeyId | SecretKind::GoogleApiKey => keep_prefix(value, 4, out),
        SecretKind::GithubToken => {
            let p = if value.starts_with("github_pat_") {
                11
            } else {
                4
            };
            keep_prefix(value, p, out)
        }
        SecretKind::SlackToken => keep_prefix(value, 5, out),
        SecretKind::StripeKey => keep_prefix(value, 8, out),
        SecretKind::Jwt => {
            // The first 8 characters only say `{"alg"`; the rest is claims and signature.
            // A merged span may hold non-ASCII text: cut on a char boundary.
            let mut p = value.len().min(8).min(value.len() / 2);
            while !value.is_char_boundary(p) {
                p -= 1;
            }
            out.push_str(&value[..p]);
            out.push('…');
            out.push_str(STARS);
        }
        SecretKind::PaymentCard | SecretKind::Iban => {
            // First four and last four characters shown, the separators of the printed form
            // kept (PCI allows first six / last four; we show less). Anything else is masked:
            // a merged span may carry more than digits.
            let is_sep = |c: char| c == ' ' || c == '-';
            let total = value.chars().filter(|&c| !is_sep(c)).count();
            let mut seen = 0;
            for c in value.chars() {
                if is_sep(c) {
                    out.push(c);
                    continue;
                }
                seen += 1;
                let shown = total >= 12 && (seen <= 4 || seen > total - 4);
                out.push(if shown { c } else { '*' });
            }
        }
        SecretKind::Email => {
            if let Some(c) = value.chars().next() {
                out.push(c);
            }
            out.push_str("***");
        }
        SecretKind::PrivateKey => {
            // Keep the line structure around the body so the block still reads as PEM.
            let lead = if value.starts_with("\r\n") {
                "\r\n"
            } else if value.starts_with("\\n") {
                "\\n"
            } else if value.starts_with('\n') {
                "\n"
            } else {
                ""
            };
            out.push_str(lead);
            out.push_str("****(masked private key)****");
            if !lead.is_empty() && value.ends_with(lead) {
                out.push_str(lead);
            }
        }
        SecretKind::AwsSecretKey
        | SecretKind::AuthorizationHeader
        | SecretKind::KeyValueSecret
        | SecretKind::ArgvPassword
        | SecretKind::UrlCredentials
        | SecretKind::SqlRolePassword => out.push_str(STARS),
    }
}

fn keep_prefix(value: &str, prefix: usize, out: &mut String) {
    let p = prefix.min(value.len());
    let p = if value.is_char_boundary(p) { p } else { 0 };
    out.push_str(&value[..p]);
    out.extend(std::iter::repeat_n('*', value[p..].chars().count()));
}

/// The masker every output of the agent goes through (journal lines, socket replies). One
/// instance: its scanner tables are built once.
pub fn shared() -> &'static Masker {
    static SHARED: std::sync::OnceLock<Masker> = std::sync::OnceLock::new();
    SHARED.get_or_init(Masker::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::default()
    }

    fn kinds(text: &str) -> Vec<SecretKind> {
        SecretScanner::new()
            .scan(text)
            .iter()
            .map(|s| s.kind)
            .collect()
    }

    // Fake secrets of real shapes. AWS's are its documented examples; the rest are made up
    // here with the right prefix, length and checksum.
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----";

    fn secrets() -> Vec<(&'static str, String, SecretKind)> {
        vec![
            ("aws id", "key AKIAIOSFODNN7EXAMPLE here".into(), SecretKind::AwsAccessKeyId),
            ("aws sts id", "ASIAY34FZKBOKMUTVV7A".into(), SecretKind::AwsAccessKeyId),
            (
                "aws secret after id",
                "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                SecretKind::AwsSecretKey,
            ),
            (
                "aws secret by key",
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                SecretKind::AwsSecretKey,
            ),
            ("pem", format!("x {PEM} y"), SecretKind::PrivateKey),
            (
                "pem truncated",
                "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7".into(),
                SecretKind::PrivateKey,
            ),
            (
                "pem openssh in json",
                "{\"k\":\"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\\n-----END OPENSSH PRIVATE KEY-----\"}".into(),
                SecretKind::PrivateKey,
            ),
            ("jwt", format!("token {JWT}"), SecretKind::Jwt),
            (
                "bearer",
                "Authorization: Bearer abcDEF123456ghiJKL789".into(),
                SecretKind::AuthorizationHeader,
            ),
            (
                "basic",
                "authorization: Basic dXNlcjpodW50ZXIy".into(),
                SecretKind::AuthorizationHeader,
            ),
            (
                "github",
                "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789".into(),
                SecretKind::GithubToken,
            ),
            (
                "github pat",
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW".into(),
                SecretKind::GithubToken,
            ),
            (
                "slack",
                "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
                SecretKind::SlackToken,
            ),
            (
                "google",
                "key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q".into(),
                SecretKind::GoogleApiKey,
            ),
            (
                "stripe",
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(),
                SecretKind::StripeKey,
            ),
            ("password kv", "user=bob&password=hunter2&x=1".into(), SecretKind::KeyValueSecret),
            ("passwd env", "MYSQL_PASSWD=s3cr3tpass".into(), SecretKind::KeyValueSecret),
            ("json secret", "{\"client_secret\": \"abc123xyz\"}".into(), SecretKind::KeyValueSecret),
            ("yaml token", "api_token: tok_9f8e7d6c".into(), SecretKind::KeyValueSecret),
            (
                "cookie",
                "Cookie: lang=en; JSESSIONID=8F3A2B1C9D; sid=s%3Aabc".into(),
                SecretKind::KeyValueSecret,
            ),
            ("flag", "--password=Sup3rS3cret!".into(), SecretKind::KeyValueSecret),
            (
                "url creds",
                "postgres://app:Xy9pQ2rT@db.internal:5432/app".into(),
                SecretKind::UrlCredentials,
            ),
            ("visa", "card 4111111111111111 ok".into(), SecretKind::PaymentCard),
            ("visa spaced", "4111 1111 1111 1111".into(), SecretKind::PaymentCard),
            ("amex dashed", "3782-822463-10005".into(), SecretKind::PaymentCard),
            ("mastercard", "5555555555554444".into(), SecretKind::PaymentCard),
            ("mc 2-series", "2223003122003222".into(), SecretKind::PaymentCard),
            ("email", "mail john.doe+x@example.com now".into(), SecretKind::Email),
            ("iban", "DE89370400440532013000".into(), SecretKind::Iban),
            ("iban spaced", "GB82 WEST 1234 5698 7654 32".into(), SecretKind::Iban),
            (
                "pg role",
                "ALTER ROLE app WITH PASSWORD 'n0t-s0-s3cret'".into(),
                SecretKind::SqlRolePassword,
            ),
        ]
    }

    /// The sensitive substring of each case: what must not appear in the output.
    fn sensitive_part(text: &str, kind: SecretKind) -> Vec<String> {
        SecretScanner::new()
            .scan(text)
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| text[s.start..s.end].to_owned())
            .collect()
    }

    #[test]
    fn every_real_shaped_secret_is_found_and_masked() {
        let m = masker();
        for (name, text, kind) in secrets() {
            let found = kinds(&text);
            assert!(
                found.contains(&kind),
                "{name}: expected {kind:?} in {found:?}"
            );
            let masked = m.mask_str(&text);
            assert!(matches!(masked, Cow::Owned(_)), "{name}: not masked");
            for secret in sensitive_part(&text, kind) {
                // Masked samples keep a short prefix/suffix; the whole value never survives.
                assert!(
                    !masked.contains(&secret),
                    "{name}: {secret:?} survived in {masked:?}"
                );
            }
        }
    }

    #[test]
    fn known_secret_values_never_appear_in_output() {
        let m = masker();
        let raw = [
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "hunter2",
            "Xy9pQ2rT",
            "4111111111111111",
            "4111 1111 1111",
            "n0t-s0-s3cret",
            "abcDEF123456ghiJKL789",
            "0532013000",
        ];
        let all: String = secrets().into_iter().map(|(_, t, _)| t + "\n").collect();
        let masked = m.mask_str(&all);
        for r in raw {
            assert!(all.contains(r), "test data lost {r}");
            assert!(!masked.contains(r), "{r} survived");
        }
    }

    #[test]
    fn samples_keep_kind_and_shape() {
        let m = masker();
        assert_eq!(m.mask_str("AKIAIOSFODNN7EXAMPLE"), "AKIA****************");
        assert_eq!(m.mask_str("4111111111111111"), "4111********1111");
        assert_eq!(m.mask_str("4111-1111-1111-1111"), "4111-****-****-1111");
        assert_eq!(m.mask_str("to: john@example.com"), "to: j***@example.com");
        assert_eq!(m.mask_str("password=hunter2&a=1"), "password=****&a=1");
        assert_eq!(m.mask_str(JWT), "eyJhbGci…****");
        assert_eq!(
            m.mask_str("Authorization: Bearer abcDEF123456ghiJKL789\r\n"),
            "Authorization: Bearer ****\r\n"
        );
        assert_eq!(
            m.mask_str("postgres://app:Xy9pQ2rT@db/app"),
            "postgres://app:****@db/app"
        );
        assert_eq!(
            m.mask_str(PEM),
            "-----BEGIN RSA PRIVATE KEY-----\n****(masked private key)****\n-----END RSA PRIVATE KEY-----"
        );
        assert_eq!(
            m.mask_str("DE89370400440532013000"),
            "DE89**************3000"
        );
    }

    #[test]
    fn benign_strings_are_borrowed_unchanged() {
        let m = masker();
        let benign = [
            "GET /api/v1/users/12345?page=2&sort=name HTTP/1.1",
            "550e8400-e29b-41d4-a716-446655440000",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "commit 3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a",
            "ts=1700000000000 took 1234567890123456789012ms",
            "elapsed 3.1415926535897932 seconds",
            "order 20240101123456 shipped",
            "hello world, nothing to see: just text = fine",
            "basic auth is disabled",
            "the quick brown fox jumps over the lazy dog 4111",
            "AB12CD34EF56GH78IJ90",
            "DE89370400440532013001",
            "4111111111111112",
            "https://example.com/path?q=1",
            "select * from users where id = 42",
            "user@localhost",
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            "ids 4111111111111111111111 and 0x4111111111111111",
            "uuid 41111111-1111-1111-1111-111111111111",
            "version 4.111111111111111",
            "epoch ns 1733212345123456789",
        ];
        for b in benign {
            let out = m.mask_str(b);
            assert!(
                matches!(out, Cow::Borrowed(_)),
                "{b:?} was changed to {out:?}"
            );
        }
    }

    #[test]
    fn policy_keep_opts_one_kind_out_of_masking() {
        let m = Masker::new(MaskPolicy::mask_all().keep(SecretKind::Email));
        assert_eq!(
            m.mask_str("john@example.com 4111111111111111"),
            "john@example.com 4111********1111"
        );
    }

    #[test]
    fn masking_masked_text_changes_nothing() {
        // Exports re-mask what the journal already masked: samples must not be re-detected
        // into something else.
        let m = masker();
        for (name, text, _) in secrets() {
            let once = m.mask_str(&text).into_owned();
            let twice = m.mask_str(&once).into_owned();
            assert_eq!(once, twice, "{name}");
        }
    }

    #[test]
    fn every_rendering_takes_any_text() {
        // Overlapping finds merge, and the merged span is rendered as its most specific kind
        // whatever it holds: no rendering may assume ASCII or a length.
        let values = [
            "",
            "é",
            "éééééééééééééééééé",
            "a",
            "ab€cd€ef€gh€",
            "\u{10FFFF}x",
        ];
        for kind in SecretKind::ALL {
            for v in values {
                let mut out = String::new();
                render_masked(kind, v, &mut out);
                if v.chars().count() > 8 {
                    assert_ne!(out, v, "{kind:?}");
                }
            }
        }
    }

    #[test]
    fn policy_names_round_trip() {
        for k in SecretKind::ALL {
            assert_eq!(SecretKind::from_name(k.name()), Some(k));
        }
        let p = MaskPolicy::keeping(["email", "iban"]);
        assert_eq!(p.map(|p| p.action(SecretKind::Iban)), Ok(MaskAction::Keep));
        assert_eq!(MaskPolicy::keeping(["email", "bogus"]), Err("bogus"));
    }

    #[test]
    fn argv_split_and_glued_passwords() {
        let m = masker();
        let argv: Vec<String> = [
            "/usr/bin/mysql",
            "-uroot",
            "-pS3cretPw",
            "--password",
            "Other1",
            "-p",
            "dbname",
            "--token=abc123",
            "--verbose",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = m.mask_argv(&argv);
        assert_eq!(
            out,
            [
                "/usr/bin/mysql",
                "-uroot",
                "-p****",
                "--password",
                "****",
                "-p",
                "dbname",
                "--token=****",
                "--verbose"
            ]
        );
        let curl: Vec<String> = ["curl", "-u", "bob:pw1234", "https://x.example/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            m.mask_argv(&curl),
            ["curl", "-u", "****", "https://x.example/"]
        );
        let sshpass: Vec<String> = ["sshpass", "-p", "pw123", "ssh", "host"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            m.mask_argv(&sshpass),
            ["sshpass", "-p", "****", "ssh", "host"]
        );
    }

    #[test]
    fn json_strings_and_secret_keys_masked_in_place() {
        let m = masker();
        let mut v = serde_json::json!({
            "argv": ["curl", "-H", "Authorization: Bearer abcDEF123456ghiJKL789"],
            "password": "hunter2",
            "pin_token": 123456,
            "note": "card 4111111111111111",
            "count": 3,
        });
        m.mask_json(&mut v);
        let s = v.to_string();
        assert!(!s.contains("hunter2") && !s.contains("abcDEF123456") && !s.contains("123456,"));
        assert_eq!(v["note"], "card 4111********1111");
        assert_eq!(v["password"], "****");
        assert_eq!(v["count"], 3);

        #[derive(serde::Serialize)]
        struct Evidence {
            argv: Vec<String>,
            query: String,
        }
        let e = Evidence {
            argv: vec![
                "app".into(),
                "--api-key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q".into(),
            ],
            query: "token=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789".into(),
        };
        let out = m
            .to_masked_json(&e)
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert!(
            out.contains("--api-key=****") && out.contains("token=****"),
            "{out}"
        );
        assert!(
            !out.contains("SyA1b2C3") && !out.contains("aBcDeFgH"),
            "{out}"
        );
    }

    #[test]
    fn sql_keeps_structure_and_masks_literals() {
        let m = masker();
        assert_eq!(
            m.mask_sql("CREATE ROLE app LOGIN PASSWORD 'hunter2'"),
            "CREATE ROLE app LOGIN PASSWORD '****'"
        );
        assert_eq!(
            m.mask_sql("ALTER USER app WITH ENCRYPTED PASSWORD 'md5abc' VALID UNTIL '2030-01-01'"),
            "ALTER USER app WITH ENCRYPTED PASSWORD '****' VALID UNTIL '2030-01-01'"
        );
        assert_eq!(
            m.mask_sql(
                "INSERT INTO cards(pan, mail) VALUES ('4111111111111111', 'john@example.com')"
            ),
            "INSERT INTO cards(pan, mail) VALUES ('4111********1111', 'j***@example.com')"
        );
        assert_eq!(
            m.mask_sql("SELECT 1 FROM users WHERE name = 'bob' AND password = 'x''y'"),
            "SELECT 1 FROM users WHERE name = 'bob' AND password = '****'"
        );
        assert_eq!(
            m.mask_sql("SELECT * FROM t WHERE pan = 4111111111111111 -- mail a@example.com"),
            "SELECT * FROM t WHERE pan = 4111********1111 -- mail a***@example.com"
        );
        let benign =
            "SELECT \"password\" FROM t WHERE id = $1 AND s = $$it's 4111$$ AND e = E'a\\'b'";
        assert!(matches!(m.mask_sql(benign), Cow::Borrowed(_)));
        assert_eq!(
            m.mask_sql("SELECT $f$AKIAIOSFODNN7EXAMPLE$f$"),
            "SELECT $f$AKIA****************$f$"
        );
    }

    #[test]
    fn luhn_and_iban_checks() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(iban_checksum(b"GB82WEST12345698765432"));
        assert!(!iban_checksum(b"GB82WEST12345698765433"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let m = masker();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"AKIASaeyJ-=:@' \n\"/0123456789._+xob$E*gh_psk\\";
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let mut buf = Vec::with_capacity(len);
            let mut y = x;
            for _ in 0..len {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                // Mostly trigger bytes so detectors run deep, some arbitrary (UTF-8 splits).
                if y.is_multiple_of(7) {
                    buf.push((y >> 8) as u8);
                } else {
                    buf.push(alphabet[(y >> 16) as usize % alphabet.len()]);
                }
            }
            let text = String::from_utf8_lossy(&buf);
            let _ = m.mask_str(&text);
            let _ = m.mask_sql(&text);
            let argv: Vec<String> = text.split(' ').map(str::to_owned).collect();
            let masked = m.mask_argv(&argv);
            assert_eq!(masked.len(), argv.len());
            let mut v = serde_json::json!({ "password": text.clone(), "a": [text.clone()] });
            m.mask_json(&mut v);
            assert_eq!(v["password"], "****");
        }
    }

    /// `cargo test --release -p rasp-agent --lib mask::tests::bench_fast_path -- --ignored
    /// --nocapture`: ns per 200-byte benign string (a measurement, not a timed assertion).
    #[test]
    #[ignore]
    fn bench_fast_path() {
        let m = masker();
        let benign = "GET /api/v1/orders/20240101?page=2&sort=created_at HTTP/1.1 Host: shop.example.com User-Agent: Mozilla/5.0 (X11; Linux x86_64) Accept: text/html, application/json; q=0.9 trace=4bf92f3577b34da6";
        let benign = &benign.repeat(2)[..200];
        let plain = "the quick brown fox jumps over the lazy dog while the agent watches every process on this node and reports what it does to the operator, who reads the journal in the morning over coffee ok";
        let plain = &plain.repeat(2)[..200];
        // RASP_BENCH_ITERS lowers the count for instruction counting under callgrind.
        let iters: u32 = std::env::var("RASP_BENCH_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        // RASP_BENCH_CASE picks one case (http-ish, prose, sql) for per-case counts.
        let case = std::env::var("RASP_BENCH_CASE").unwrap_or_default();
        let wanted = |name: &str| case.is_empty() || case == name;
        for (name, text) in [("http-ish", benign), ("prose", plain)] {
            if !wanted(name) {
                continue;
            }
            // The machine is shared: the best of several rounds is the code's cost.
            let n = iters;
            let mut best = f64::MAX;
            let mut owned = 0;
            for _ in 0..7 {
                let t = std::time::Instant::now();
                for _ in 0..n {
                    if matches!(m.mask_str(std::hint::black_box(text)), Cow::Owned(_)) {
                        owned += 1;
                    }
                }
                best = best.min(t.elapsed().as_nanos() as f64 / f64::from(n));
            }
            println!("mask_str {name} 200 B: {best:.0} ns/string (best of 7, owned {owned})");
            assert_eq!(owned, 0);
        }
        if !wanted("sql") {
            return;
        }
        let query = "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'shipped' AND o.created_at > '2024-01-01' AND c.region = $1 ORDER BY o.created_at DESC LIMIT 50";
        let n = iters;
        let mut best = f64::MAX;
        let mut owned = 0;
        for _ in 0..7 {
            let t = std::time::Instant::now();
            for _ in 0..n {
                if matches!(m.mask_sql(std::hint::black_box(query)), Cow::Owned(_)) {
                    owned += 1;
                }
            }
            best = best.min(t.elapsed().as_nanos() as f64 / f64::from(n));
        }
        println!(
            "mask_sql {} B benign query: {best:.0} ns/query (best of 7, owned {owned})",
            query.len()
        );
        assert_eq!(owned, 0);
    }
}
