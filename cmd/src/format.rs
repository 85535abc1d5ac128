//! Docker-CLI-shaped output: aligned tables, `--format` Go templates, and
//! docker's human-readable units.
//!
//! shoal's users know the docker CLI, so the strings produced here follow what
//! docker prints: tables use docker/cli's `tabwriter.NewWriter(out, 10, 1, 3,
//! ' ', 0)` layout, `--format` accepts a subset of Go's `text/template` with
//! docker's extra functions, and sizes and durations follow
//! `github.com/docker/go-units`. Everything here is pure (no I/O) so it can be
//! tested with exact expected strings.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Number, Value};

// ---------------------------------------------------------------------------
// Tables (docker/cli's tabwriter)
// ---------------------------------------------------------------------------

/// Minimal column width, padding included (docker/cli: `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`).
const TAB_MIN_WIDTH: usize = 10;
/// Spaces added to the widest cell of a column.
const TAB_PADDING: usize = 3;

/// A table laid out like the output of docker's `ls` commands.
///
/// Each column is as wide as its widest cell (in display columns) plus three
/// spaces, and at least ten; the last column is not padded.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

#[cfg(test)]
impl Table {
    /// A table with these column headers (an empty slice prints no header line).
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends one row; cells are given in column order.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// The aligned table, one `\n`-terminated line per header and row.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let header = (!self.headers.is_empty()).then_some(&self.headers);
        for cells in header.into_iter().chain(self.rows.iter()) {
            text.push_str(&cells.join("\t"));
            text.push('\n');
        }
        tabwrite(&text)
    }
}

/// Aligns tab-separated text exactly like docker/cli's tabwriter (Go's
/// elastic-tabstop algorithm with minwidth 10, padding 3, space padding),
/// except that padding at the end of a line is not written.
///
/// Cells end at `\t` (or `\v`); lines end at `\n`; `\f` ends a line and starts
/// an independent block, as in Go.
pub fn tabwrite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let sections: Vec<&str> = text.split('\x0c').collect();
    let last = sections.len().saturating_sub(1);
    for (i, section) in sections.iter().enumerate() {
        let lines = tab_lines(section, i < last);
        let mut widths = Vec::new();
        tab_format(&mut out, &lines, &mut widths, 0, lines.len());
    }
    out
}

/// One cell: its text and its display width.
#[derive(Debug)]
struct TabCell<'a> {
    text: &'a str,
    width: usize,
}

/// Splits a section into lines of cells the way Go's tabwriter buffers them:
/// every cell of a terminated line counts, but an unterminated last line only
/// gets a trailing cell when it has text.
fn tab_lines(section: &str, terminated: bool) -> Vec<Vec<TabCell<'_>>> {
    let raw: Vec<&str> = section.split('\n').collect();
    let count = raw.len();
    let mut lines = Vec::with_capacity(count + 1);
    for (i, line) in raw.iter().enumerate() {
        let mut cells: Vec<TabCell<'_>> = line
            .split(['\t', '\x0b'])
            .map(|text| TabCell {
                text,
                width: tab_text_width(text),
            })
            .collect();
        if i + 1 == count && !terminated && cells.last().is_some_and(|c| c.text.is_empty()) {
            cells.pop();
        }
        lines.push(cells);
    }
    if terminated {
        lines.push(Vec::new());
    }
    lines
}

/// Go's `tabwriter.(*Writer).format`: finds the blocks of consecutive lines
/// sharing column `widths.len()`, sizes each, and recurses to the right.
fn tab_format(
    out: &mut String,
    lines: &[Vec<TabCell<'_>>],
    widths: &mut Vec<usize>,
    start: usize,
    end: usize,
) {
    let column = widths.len();
    let mut line0 = start;
    let mut this = start;
    while this < end {
        // The last cell of a line is not part of any column.
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        tab_write_lines(out, lines, widths, line0, this);
        line0 = this;
        let mut width = TAB_MIN_WIDTH;
        while this < end && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].width + TAB_PADDING);
            this += 1;
        }
        widths.push(width);
        tab_format(out, lines, widths, line0, this);
        widths.pop();
        line0 = this;
    }
    tab_write_lines(out, lines, widths, line0, end);
}

/// Writes lines `start..end` with the known column widths; padding is only
/// written when more text follows on the same line.
fn tab_write_lines(
    out: &mut String,
    lines: &[Vec<TabCell<'_>>],
    widths: &[usize],
    start: usize,
    end: usize,
) {
    for (i, line) in lines.iter().enumerate().take(end).skip(start) {
        let mut pending = 0;
        for (j, cell) in line.iter().enumerate() {
            if !cell.text.is_empty() {
                out.extend(std::iter::repeat_n(' ', pending));
                pending = 0;
                out.push_str(cell.text);
            }
            if let Some(width) = widths.get(j) {
                pending += width.saturating_sub(cell.width);
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

/// Display width as docker's tabwriter measures it (go-runewidth): wide East
/// Asian characters count two, combining marks and controls zero.
fn tab_text_width(text: &str) -> usize {
    text.chars()
        .map(|c| {
            if is_zero_width(c) {
                0
            } else if is_wide(c) {
                2
            } else {
                1
            }
        })
        .sum()
}

/// Characters go-runewidth gives no width: controls, combining marks, format characters.
fn is_zero_width(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x0300..=0x036F | 0x0483..=0x0489 | 0x0591..=0x05BD | 0x0610..=0x061A
            | 0x064B..=0x065F | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064
            | 0x20D0..=0x20FF | 0xFE00..=0xFE0F | 0xFE20..=0xFE2F | 0xFEFF
            | 0xE0100..=0xE01EF)
}

/// East Asian Wide and Fullwidth characters (Unicode TR 11), which take two columns.
fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x231A..=0x231B | 0x2329..=0x232A | 0x23E9..=0x23EC | 0x23F0 | 0x23F3
        | 0x25FD..=0x25FE | 0x2614..=0x2615 | 0x2648..=0x2653 | 0x267F | 0x2693 | 0x26A1
        | 0x26AA..=0x26AB | 0x26BD..=0x26BE | 0x26C4..=0x26C5 | 0x26CE | 0x26D4 | 0x26EA
        | 0x26F2..=0x26F3 | 0x26F5 | 0x26FA | 0x26FD | 0x2705 | 0x270A..=0x270B | 0x2728
        | 0x274C | 0x274E | 0x2753..=0x2755 | 0x2757 | 0x2795..=0x2797 | 0x27B0 | 0x27BF
        | 0x2B1B..=0x2B1C | 0x2B50 | 0x2B55 | 0x2E80..=0x303E | 0x3041..=0x33FF
        | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xA960..=0xA97F
        | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE10..=0xFE19 | 0xFE30..=0xFE6F
        | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F004 | 0x1F0CF | 0x1F18E | 0x1F191..=0x1F19A
        | 0x1F200..=0x1F251 | 0x1F300..=0x1F64F | 0x1F680..=0x1F6FF | 0x1F7E0..=0x1F7EB
        | 0x1F90C..=0x1F9FF | 0x1FA70..=0x1FAFF | 0x20000..=0x2FFFD | 0x30000..=0x3FFFD)
}

/// docker/cli's `formatter.Ellipsis`: cuts `s` to at most `max_width` display
/// columns, ending in `…` when something was cut.
pub fn ellipsis(s: &str, max_width: usize) -> String {
    if max_width == 0 {
        return String::new();
    }
    let chars: Vec<char> = s.chars().collect();
    if max_width == 1 {
        return chars.first().map(|c| c.to_string()).unwrap_or_default();
    }
    let width = |c: &char| if is_wide(*c) { 2 } else { 1 };
    if chars.iter().map(width).sum::<usize>() <= max_width {
        return s.to_owned();
    }
    // Keep the longest prefix that leaves one column for the ellipsis.
    let mut used = 0;
    let mut out = String::new();
    for c in &chars {
        if used + width(c) > max_width - 1 {
            break;
        }
        used += width(c);
        out.push(*c);
    }
    if out.is_empty() {
        // docker returns the text unchanged when even the first character does not fit.
        return s.to_owned();
    }
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// --format selection
// ---------------------------------------------------------------------------

/// What a `--format` flag asked for, as docker's formatter interprets it.
#[derive(Debug, Clone)]
pub enum OutputFormat {
    /// No format, or `table`: the command's default table.
    Table,
    /// `json`: one JSON object per line.
    Json,
    /// A template printed once per item, each followed by a newline.
    Template(Template),
    /// `table …`: a template whose output is aligned, under a header row.
    TableTemplate(Template),
}

impl OutputFormat {
    /// Parses a `--format` value. Like docker, a value starting with `table`
    /// is a table template, `json` is JSON lines, anything else a template;
    /// the template text is trimmed of spaces and `\t` / `\n` written as two
    /// characters become a tab / newline.
    pub fn parse(format: Option<&str>) -> Result<Self, TemplateError> {
        let raw = format.unwrap_or("");
        if raw.is_empty() || raw == "table" {
            return Ok(Self::Table);
        }
        if raw == "json" {
            return Ok(Self::Json);
        }
        if let Some(rest) = raw.strip_prefix("table") {
            return Ok(Self::TableTemplate(Template::parse(&preprocess_format(
                rest,
            ))?));
        }
        Ok(Self::Template(Template::parse(&preprocess_format(raw))?))
    }

    /// Renders `rows`. `headers` maps template field names to docker's column
    /// labels (e.g. `("ID", "CONTAINER ID")`) for table templates;
    /// `default_table` is the command's default format, used for
    /// [`OutputFormat::Table`] (e.g. `"table {{.ID}}\t{{.Image}}"`).
    pub fn render(
        &self,
        rows: &[Value],
        headers: &[(&str, &str)],
        default_table: &str,
    ) -> Result<String, TemplateError> {
        match self {
            Self::Table => {
                let body = default_table.strip_prefix("table").unwrap_or(default_table);
                let template = Template::parse(&preprocess_format(body))?;
                render_table(&template, rows, headers)
            }
            Self::TableTemplate(template) => render_table(template, rows, headers),
            Self::Template(template) => {
                let mut out = String::new();
                for row in rows {
                    out.push_str(&template.render(row)?);
                    out.push('\n');
                }
                Ok(out)
            }
            Self::Json => {
                let mut out = String::new();
                for row in rows {
                    out.push_str(&json_line_sorted(row));
                    out.push('\n');
                }
                Ok(out)
            }
        }
    }
}

/// docker's `Context.preFormat` clean-up: trim spaces, and turn the two-character
/// sequences `\t` and `\n` into a tab and a newline.
pub fn preprocess_format(format: &str) -> String {
    format
        .trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n")
}

/// A table template: the header is the template rendered against the header
/// labels (with docker's pass-through header functions), then one line per
/// row, all aligned by the tabwriter.
fn render_table(
    template: &Template,
    rows: &[Value],
    headers: &[(&str, &str)],
) -> Result<String, TemplateError> {
    let labels: Map<String, Value> = headers
        .iter()
        .map(|(field, label)| ((*field).to_owned(), Value::String((*label).to_owned())))
        .collect();
    let mut text = template.render_header(&Value::Object(labels));
    text.push('\n');
    for row in rows {
        text.push_str(&template.render(row)?);
        text.push('\n');
    }
    Ok(tabwrite(&text))
}

/// `--format json` for list commands: docker marshals each row from a Go map,
/// so the top-level keys come out sorted.
fn json_line_sorted(row: &Value) -> String {
    match row {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = String::from("{");
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(&mut out, key, false);
                out.push(':');
                if let Some(value) = map.get(*key) {
                    write_json(&mut out, value, false, None, 0);
                }
            }
            out.push('}');
            out
        }
        other => go_json(other, false),
    }
}

// ---------------------------------------------------------------------------
// inspect output
// ---------------------------------------------------------------------------

/// `docker inspect` output: a JSON array indented with four spaces, `[]` when
/// empty, with a trailing newline. Strings are escaped like Go's
/// `json.Marshal` (which the daemon uses), so `<`, `>` and `&` appear as
/// `\u003c`, `\u003e` and `\u0026`.
pub fn inspect_json(values: &[Value]) -> String {
    let mut out = String::new();
    write_json(
        &mut out,
        &Value::Array(values.to_vec()),
        true,
        Some("    "),
        0,
    );
    out.push('\n');
    out
}

/// `docker inspect --format json`: the same array, compact, with a trailing newline.
pub fn inspect_json_compact(values: &[Value]) -> String {
    let mut out = String::new();
    write_json(&mut out, &Value::Array(values.to_vec()), true, None, 0);
    out.push('\n');
    out
}

/// Go's `encoding/json` rendering of a value, compact; `html` escapes `<>&`
/// as `json.Marshal` does (the template `json` function does not).
fn go_json(value: &Value, html: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, value, html, None, 0);
    out
}

fn write_json(out: &mut String, value: &Value, html: bool, indent: Option<&str>, depth: usize) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(unit) = indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(unit);
            }
        }
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_json_number(n)),
        Value::String(s) => write_json_string(out, s, html),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_json(out, item, html, indent, depth + 1);
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_json_string(out, key, html);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_json(out, item, html, indent, depth + 1);
            }
            if !map.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
    }
}

/// A JSON string escaped like Go's encoder.
fn write_json_string(out: &mut String, s: &str, html: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '<' | '>' | '&' if html => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xF)] as char);
            }
            c if (c as u32) < 0x20 => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xF)] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Numbers as Go's JSON encoder writes them: integers verbatim, floats in the
/// shortest form, with an exponent only below 1e-6 or from 1e21.
fn go_json_number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let abs = f.abs();
    let neg = f.is_sign_negative();
    let (digits, dp) = float_digits(f, None);
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let prec = digits.len().saturating_sub(1);
        let mut s = fmt_e(neg, &digits, dp, prec);
        // Go cleans "e-07" up to "e-7".
        let bytes = s.as_bytes();
        let n = bytes.len();
        if n >= 4 && bytes[n - 4] == b'e' && bytes[n - 3] == b'-' && bytes[n - 2] == b'0' {
            s.remove(n - 2);
        }
        s
    } else {
        let prec = (digits.len() as i32 - dp).max(0) as usize;
        fmt_f(neg, &digits, dp, prec)
    }
}

// ---------------------------------------------------------------------------
// Go number formatting
// ---------------------------------------------------------------------------

/// Decimal digits of `|f|` without trailing zeros, and the decimal point
/// position (value = 0.d1d2… × 10^dp), rounded to `significant` digits or in
/// the shortest form that reads back exactly.
fn float_digits(f: f64, significant: Option<usize>) -> (Vec<u8>, i32) {
    if f == 0.0 || !f.is_finite() {
        return (Vec::new(), 0);
    }
    let text = match significant {
        None => {
            // Shortest digits that read back exactly; among those, Go picks the
            // closest to the value, which is the correctly rounded form.
            let shortest = format!("{:e}", f.abs());
            let count = shortest
                .split('e')
                .next()
                .unwrap_or("")
                .bytes()
                .filter(u8::is_ascii_digit)
                .count();
            let rounded = format!("{:.*e}", count.saturating_sub(1), f.abs());
            if rounded.parse::<f64>().ok() == Some(f.abs()) {
                rounded
            } else {
                shortest
            }
        }
        Some(n) => format!("{:.*e}", n.saturating_sub(1), f.abs()),
    };
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        return (Vec::new(), 0);
    }
    (digits, exponent + 1)
}

/// Go's `%e` body: `d.ddde±XX` with `prec` digits after the point.
fn fmt_e(neg: bool, digits: &[u8], dp: i32, prec: usize) -> String {
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    s.push(char::from(b'0' + digits.first().copied().unwrap_or(0)));
    if prec > 0 {
        s.push('.');
        for i in 1..=prec {
            s.push(char::from(b'0' + digits.get(i).copied().unwrap_or(0)));
        }
    }
    let exp = if digits.is_empty() { 0 } else { dp - 1 };
    s.push('e');
    s.push(if exp < 0 { '-' } else { '+' });
    let abs = exp.unsigned_abs();
    if abs < 10 {
        s.push('0');
    }
    s.push_str(&abs.to_string());
    s
}

/// Go's `%f` body with `prec` digits after the point.
fn fmt_f(neg: bool, digits: &[u8], dp: i32, prec: usize) -> String {
    let digit = |i: i32| -> char {
        let d = if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        };
        char::from(b'0' + d)
    };
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if dp > 0 {
        for i in 0..dp {
            s.push(digit(i));
        }
    } else {
        s.push('0');
    }
    if prec > 0 {
        s.push('.');
        for i in 0..prec as i32 {
            s.push(digit(dp + i));
        }
    }
    s
}

/// Go's `%g` (`strconv.FormatFloat(f, 'g', prec, 64)`); `None` is the
/// shortest form, which is what `%v` and template printing use.
fn go_format_g(f: f64, prec: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let neg = f.is_sign_negative();
    let shortest = prec.is_none();
    let (digits, dp) = float_digits(f, prec.map(|p| p.max(1)));
    let nd = digits.len() as i32;
    let mut p = match prec {
        None => nd,
        Some(p) => p.max(1) as i32,
    };
    let mut eprec = p;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    if exp < -4 || exp >= eprec {
        if p > nd {
            p = nd;
        }
        return fmt_e(neg, &digits, dp, (p - 1).max(0) as usize);
    }
    if p > dp {
        p = nd;
    }
    fmt_f(neg, &digits, dp, (p - dp).max(0) as usize)
}

/// A JSON number as Go's `%v` prints it.
fn go_number_v(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    go_format_g(n.as_f64().unwrap_or(0.0), None)
}

/// A value as Go's `fmt` `%v` prints it: `[a b]`, `map[k:v]` (keys sorted),
/// `<nil>` for null.
fn go_fmt_v(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_number_v(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_fmt_v(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push_str("map[");
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(key);
                out.push(':');
                go_fmt_v(out, item);
            }
            out.push(']');
        }
    }
}

fn go_v_string(value: &Value) -> String {
    let mut out = String::new();
    go_fmt_v(&mut out, value);
    out
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes; printable
/// characters (including non-ASCII ones) are kept as they are.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if go_is_print(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint`: graphic characters and the ASCII space.
fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF
        | 0xE0000..=0xE007F | 0xF0000..=0x10FFFF)
}

// ---------------------------------------------------------------------------
// Templates: errors
// ---------------------------------------------------------------------------

/// Whether a template failed to parse or failed while rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePhase {
    /// The template text is malformed.
    Parse,
    /// The template is fine but could not be applied to this data.
    Exec,
}

/// A template error, displayed as docker prints it:
/// `template parsing error: template: :1: function "foo" not defined`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Parse or execution error.
    pub phase: TemplatePhase,
    /// 1-based line in the (preprocessed) template text.
    pub line: usize,
    /// 0-based byte offset within the line, as Go reports it.
    pub col: usize,
    /// For execution errors, the template text being executed.
    pub context: String,
    /// What went wrong.
    pub message: String,
}

impl TemplateError {
    fn at(phase: TemplatePhase, src: &str, pos: usize, context: String, message: String) -> Self {
        let pos = pos.min(src.len());
        let before = src.get(..pos).unwrap_or("");
        let line = 1 + before.matches('\n').count();
        let col = match before.rfind('\n') {
            Some(nl) => pos - nl - 1,
            None => pos,
        };
        Self {
            phase,
            line,
            col,
            context,
            message,
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.phase {
            TemplatePhase::Parse => write!(
                f,
                "template parsing error: template: :{}: {}",
                self.line, self.message
            ),
            TemplatePhase::Exec => write!(
                f,
                "template parsing error: template: :{}:{}: executing \"\" at <{}>: {}",
                self.line, self.col, self.context, self.message
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

// ---------------------------------------------------------------------------
// Templates: lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    If,
    Else,
    End,
    Range,
    With,
    Break,
    Continue,
    Define,
    Template,
    Block,
}

impl Keyword {
    fn lookup(word: &str) -> Option<Self> {
        Some(match word {
            "if" => Self::If,
            "else" => Self::Else,
            "end" => Self::End,
            "range" => Self::Range,
            "with" => Self::With,
            "break" => Self::Break,
            "continue" => Self::Continue,
            "define" => Self::Define,
            "template" => Self::Template,
            "block" => Self::Block,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::If => "if",
            Self::Else => "else",
            Self::End => "end",
            Self::Range => "range",
            Self::With => "with",
            Self::Break => "break",
            Self::Continue => "continue",
            Self::Define => "define",
            Self::Template => "template",
            Self::Block => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokKind {
    /// Literal text outside actions (already trimmed by `{{-` / `-}}`).
    Text(String),
    /// `{{`
    Open,
    /// `}}`
    Close,
    Keyword(Keyword),
    /// A function name.
    Ident(String),
    /// `.A.B`
    Field(Vec<String>),
    /// `.`
    Dot,
    /// `$x.A.B` (name includes the `$`).
    Var(String, Vec<String>),
    Str(String),
    Number(Value),
    Bool(bool),
    Nil,
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
    /// Any other printable ASCII character (never valid; reported by the parser).
    Char(char),
    /// A lexical error; always the last token.
    Error(TemplateError),
    Eof,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: TokKind,
    pos: usize,
    end: usize,
    /// Whether whitespace separates this token from the previous one inside an action.
    space_before: bool,
}

fn is_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<Tok>,
    paren_depth: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            pos: 0,
            toks: Vec::new(),
            paren_depth: 0,
        }
    }

    fn error(&self, pos: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::at(
            TemplatePhase::Parse,
            self.src,
            pos,
            String::new(),
            message.into(),
        )
    }

    fn push(&mut self, kind: TokKind, pos: usize, end: usize, space_before: bool) {
        self.toks.push(Tok {
            kind,
            pos,
            end,
            space_before,
        });
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    /// Tokenizes the whole template. A lexical error becomes a final
    /// [`TokKind::Error`] token, so that (as in Go, whose lexer runs in step
    /// with the parser) a parse error earlier in the text is reported first.
    fn run(mut self) -> Vec<Tok> {
        match self.lex_all() {
            Ok(()) => {
                let end = self.src.len();
                self.push(TokKind::Eof, end, end, false);
            }
            Err(error) => {
                let pos = self.pos.min(self.src.len());
                self.push(TokKind::Error(error), pos, pos, false);
            }
        }
        self.toks
    }

    fn lex_all(&mut self) -> Result<(), TemplateError> {
        loop {
            let Some(offset) = self.rest().find("{{") else {
                let (start, end) = (self.pos, self.src.len());
                self.push_text(start, end);
                break;
            };
            let open = self.pos + offset;
            let after = open + 2;
            let trim_left = has_left_trim(&self.src[after..]);
            let text_end = if trim_left {
                self.pos
                    + self.src[self.pos..open]
                        .trim_end_matches([' ', '\t', '\r', '\n'])
                        .len()
            } else {
                open
            };
            let start = self.pos;
            self.push_text(start, text_end);
            self.pos = after + if trim_left { 2 } else { 0 };
            if self.rest().starts_with("/*") {
                self.lex_comment(open)?;
                continue;
            }
            self.push(TokKind::Open, open, self.pos, false);
            self.lex_action()?;
        }
        Ok(())
    }

    fn push_text(&mut self, start: usize, end: usize) {
        if end > start {
            let text = self.src[start..end].to_owned();
            self.push(TokKind::Text(text), start, end, false);
        }
    }

    /// `}}` or ` -}}` at `pos`: (trims following space, length).
    fn right_delim_at(&self, pos: usize) -> Option<(bool, usize)> {
        let rest = self.src.get(pos..)?;
        if rest.starts_with("}}") {
            return Some((false, 2));
        }
        let bytes = rest.as_bytes();
        if bytes.len() >= 4 && is_space_byte(bytes[0]) && &bytes[1..4] == b"-}}" {
            return Some((true, 4));
        }
        None
    }

    fn skip_leading_space(&mut self) {
        let skipped = self.rest().len()
            - self
                .rest()
                .trim_start_matches([' ', '\t', '\r', '\n'])
                .len();
        self.pos += skipped;
    }

    fn lex_comment(&mut self, open: usize) -> Result<(), TemplateError> {
        let Some(close) = self.rest()[2..].find("*/") else {
            return Err(self.error(open, "unclosed comment"));
        };
        let after = self.pos + 2 + close + 2;
        let Some((trim, len)) = self.right_delim_at(after) else {
            return Err(self.error(open, "comment ends before closing delimiter"));
        };
        self.pos = after + len;
        if trim {
            self.skip_leading_space();
        }
        Ok(())
    }

    fn at_terminator(&self) -> bool {
        match self.rest().chars().next() {
            None => true,
            Some(c) => {
                matches!(
                    c,
                    ' ' | '\t' | '\r' | '\n' | '.' | ',' | '|' | ':' | ')' | '('
                ) || self.rest().starts_with("}}")
            }
        }
    }

    fn lex_action(&mut self) -> Result<(), TemplateError> {
        let mut space = false;
        loop {
            if let Some((trim, len)) = self.right_delim_at(self.pos) {
                if self.paren_depth > 0 {
                    return Err(self.error(self.pos, "unclosed left paren"));
                }
                self.push(TokKind::Close, self.pos, self.pos + len, space);
                self.pos += len;
                if trim {
                    self.skip_leading_space();
                }
                return Ok(());
            }
            let Some(c) = self.rest().chars().next() else {
                return Err(self.error(self.pos, "unclosed action"));
            };
            let start = self.pos;
            let next = self.rest()[c.len_utf8()..].chars().next();
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    while self
                        .rest()
                        .as_bytes()
                        .first()
                        .is_some_and(|b| is_space_byte(*b))
                        && self.right_delim_at(self.pos).is_none()
                    {
                        self.pos += 1;
                    }
                    space = true;
                    continue;
                }
                '=' => {
                    self.pos += 1;
                    self.push(TokKind::Assign, start, self.pos, space);
                }
                ':' => {
                    if next != Some('=') {
                        return Err(self.error(start, "expected :="));
                    }
                    self.pos += 2;
                    self.push(TokKind::Declare, start, self.pos, space);
                }
                '|' => {
                    self.pos += 1;
                    self.push(TokKind::Pipe, start, self.pos, space);
                }
                ',' => {
                    self.pos += 1;
                    self.push(TokKind::Comma, start, self.pos, space);
                }
                '(' => {
                    self.pos += 1;
                    self.paren_depth += 1;
                    self.push(TokKind::LParen, start, self.pos, space);
                }
                ')' => {
                    self.pos += 1;
                    self.push(TokKind::RParen, start, self.pos, space);
                    if self.paren_depth == 0 {
                        return Err(self.error(start, "unexpected right paren U+0029 ')'"));
                    }
                    self.paren_depth -= 1;
                }
                '"' => self.lex_quote(space)?,
                '`' => self.lex_raw_quote(space)?,
                '\'' => self.lex_char(space)?,
                '$' => {
                    self.pos += 1;
                    let name_len =
                        self.rest().len() - self.rest().trim_start_matches(is_alnum).len();
                    self.pos += name_len;
                    let name = self.src[start..self.pos].to_owned();
                    let path = self.lex_field_chain();
                    self.expect_terminator(start)?;
                    self.push(TokKind::Var(name, path), start, self.pos, space);
                }
                '.' if !next.is_some_and(|n| n.is_ascii_digit()) => {
                    let path = self.lex_field_chain();
                    if path.is_empty() {
                        self.pos += 1;
                        self.push(TokKind::Dot, start, self.pos, space);
                    } else {
                        self.expect_terminator(start)?;
                        self.push(TokKind::Field(path), start, self.pos, space);
                    }
                }
                '.' | '+' | '-' | '0'..='9' => self.lex_number(space)?,
                c if c == '_' || c.is_alphabetic() => {
                    let len = self.rest().len() - self.rest().trim_start_matches(is_alnum).len();
                    self.pos += len;
                    let word = &self.src[start..self.pos];
                    let kind = match word {
                        "true" => TokKind::Bool(true),
                        "false" => TokKind::Bool(false),
                        "nil" => TokKind::Nil,
                        _ => match Keyword::lookup(word) {
                            Some(k) => TokKind::Keyword(k),
                            None => TokKind::Ident(word.to_owned()),
                        },
                    };
                    self.expect_terminator(start)?;
                    self.push(kind, start, self.pos, space);
                }
                c if c.is_ascii_graphic() => {
                    // Go passes other printable ASCII to the parser, which rejects it.
                    self.pos += 1;
                    self.push(TokKind::Char(c), start, self.pos, space);
                }
                c => {
                    return Err(self.error(
                        start,
                        format!("unrecognized character in action: {}", go_sharp_u(c)),
                    ));
                }
            }
            space = false;
        }
    }

    /// Consumes `.A.B…` (each `.` followed by an identifier) and returns the names.
    fn lex_field_chain(&mut self) -> Vec<String> {
        let mut path = Vec::new();
        while let Some(after_dot) = self.rest().strip_prefix('.') {
            let len = after_dot.len() - after_dot.trim_start_matches(is_alnum).len();
            if len == 0 {
                break;
            }
            path.push(after_dot[..len].to_owned());
            self.pos += 1 + len;
        }
        path
    }

    fn expect_terminator(&self, start: usize) -> Result<(), TemplateError> {
        if self.at_terminator() {
            return Ok(());
        }
        let c = self.rest().chars().next().unwrap_or(' ');
        Err(self.error(start, format!("bad character {}", go_sharp_u(c))))
    }

    fn lex_number(&mut self, space: bool) -> Result<(), TemplateError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = self.pos;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            i += 1;
        }
        let mut hex = false;
        if i + 1 < bytes.len() && bytes[i] == b'0' && (bytes[i + 1] == b'x' || bytes[i + 1] == b'X')
        {
            hex = true;
            i += 2;
            while i < bytes.len() && (bytes[i].is_ascii_hexdigit() || bytes[i] == b'_') {
                i += 1;
            }
        } else {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'.' {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                i += 1;
                if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
                    i += 1;
                }
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
        }
        let text = &self.src[start..i];
        let bad = || self.error(start, format!("bad number syntax: {text:?}"));
        if let Some(c) = self.src[i..].chars().next().filter(|c| is_alnum(*c)) {
            // Go reports the number with the offending character.
            let text = &self.src[start..i + c.len_utf8()];
            return Err(self.error(start, format!("bad number syntax: {text:?}")));
        }
        let clean: String = text.chars().filter(|c| *c != '_').collect();
        let value = if hex {
            let (neg, digits) = match clean.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
            };
            let digits = &digits[2..];
            let magnitude = i64::from_str_radix(digits, 16).map_err(|_| bad())?;
            Value::from(if neg { -magnitude } else { magnitude })
        } else if clean.contains(['.', 'e', 'E']) {
            let f: f64 = clean.parse().map_err(|_| bad())?;
            Number::from_f64(f).map(Value::Number).ok_or_else(bad)?
        } else if let Ok(n) = clean.parse::<i64>() {
            Value::from(n)
        } else if let Ok(n) = clean.trim_start_matches('+').parse::<u64>() {
            Value::from(n)
        } else {
            return Err(bad());
        };
        self.pos = i;
        self.push(TokKind::Number(value), start, i, space);
        Ok(())
    }

    fn lex_quote(&mut self, space: bool) -> Result<(), TemplateError> {
        let start = self.pos;
        let mut chars = self.src[start + 1..].char_indices();
        let end = loop {
            match chars.next() {
                None | Some((_, '\n')) => {
                    return Err(self.error(start, "unterminated quoted string"));
                }
                Some((_, '\\')) => match chars.next() {
                    None | Some((_, '\n')) => {
                        return Err(self.error(start, "unterminated quoted string"));
                    }
                    Some(_) => {}
                },
                Some((i, '"')) => break start + 1 + i,
                Some(_) => {}
            }
        };
        let body = &self.src[start + 1..end];
        let Some(value) = go_unquote(body) else {
            return Err(self.error(start, "invalid syntax"));
        };
        self.pos = end + 1;
        self.push(TokKind::Str(value), start, self.pos, space);
        Ok(())
    }

    fn lex_raw_quote(&mut self, space: bool) -> Result<(), TemplateError> {
        let start = self.pos;
        let Some(len) = self.src[start + 1..].find('`') else {
            return Err(self.error(start, "unterminated raw quoted string"));
        };
        let value = self.src[start + 1..start + 1 + len].to_owned();
        self.pos = start + len + 2;
        self.push(TokKind::Str(value), start, self.pos, space);
        Ok(())
    }

    fn lex_char(&mut self, space: bool) -> Result<(), TemplateError> {
        let start = self.pos;
        let mut chars = self.src[start + 1..].char_indices();
        let end = loop {
            match chars.next() {
                None | Some((_, '\n')) => {
                    return Err(self.error(start, "unterminated character constant"));
                }
                Some((_, '\\')) => {
                    chars.next();
                }
                Some((i, '\'')) => break start + 1 + i,
                Some(_) => {}
            }
        };
        let body = &self.src[start + 1..end];
        let decoded = go_unquote(&body.replace('"', "\\\""));
        let mut it = decoded.as_deref().unwrap_or("").chars();
        let (Some(c), None) = (it.next(), it.next()) else {
            return Err(self.error(
                start,
                format!("malformed character constant: {}", &self.src[start..=end]),
            ));
        };
        self.pos = end + 1;
        self.push(
            TokKind::Number(Value::from(c as u32)),
            start,
            self.pos,
            space,
        );
        Ok(())
    }
}

/// Go's `%#U`: `U+0023 '#'`, without the quoted character when it is not printable.
fn go_sharp_u(c: char) -> String {
    if go_is_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// `{{- ` : a dash followed by white space right after `{{`.
fn has_left_trim(after_open: &str) -> bool {
    let b = after_open.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space_byte(b[1])
}

/// Go's interpreted string literal escapes.
fn go_unquote(body: &str) -> Option<String> {
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = v * 16 + chars.next()?.to_digit(16)?;
        }
        Some(v)
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let escaped = chars.next()?;
        let simple = match escaped {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            '\'' => Some(b'\''),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        match escaped {
            'x' => out.push(u8::try_from(hex(&mut chars, 2)?).ok()?),
            'u' | 'U' => {
                let c = char::from_u32(hex(&mut chars, if escaped == 'u' { 4 } else { 8 })?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let mut v = escaped.to_digit(8)?;
                for _ in 0..2 {
                    v = v * 8 + chars.next()?.to_digit(8)?;
                }
                out.push(u8::try_from(v).ok()?);
            }
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

// ---------------------------------------------------------------------------
// Templates: syntax tree and parser
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    /// `{{pipeline}}`: prints the value unless the pipeline declares variables.
    Action(Pipeline),
    If {
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Break,
    Continue,
}

/// Where a node sits in the template: the position Go reports for it, and
/// the byte range shown as context in execution errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct At {
    pos: usize,
    start: usize,
    end: usize,
}

impl At {
    fn span(start: usize, end: usize) -> Self {
        Self {
            pos: start,
            start,
            end,
        }
    }
}

#[derive(Debug, Clone)]
struct Pipeline {
    at: At,
    /// Declared (`:=`) or assigned (`=`) variables.
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
struct Command {
    at: At,
    args: Vec<Arg>,
}

/// One operand of a command.
#[derive(Debug, Clone)]
struct Arg {
    term: Term,
    at: At,
}

#[derive(Debug, Clone)]
enum Term {
    Dot,
    Nil,
    Literal(Value),
    Func(Func),
    Field(Vec<String>),
    Var(String, Vec<String>),
    /// `( pipeline ).A.B`
    Sub(Box<Pipeline>, Vec<String>),
}

/// The functions available to templates: Go's builtins plus docker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    And,
    Or,
    Not,
    Len,
    Index,
    Slice,
    Print,
    Printf,
    Println,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Json,
    Split,
    Join,
    Title,
    Lower,
    Upper,
    Pad,
    Truncate,
}

impl Func {
    const ALL: [Func; 23] = [
        Func::And,
        Func::Or,
        Func::Not,
        Func::Len,
        Func::Index,
        Func::Slice,
        Func::Print,
        Func::Printf,
        Func::Println,
        Func::Eq,
        Func::Ne,
        Func::Lt,
        Func::Le,
        Func::Gt,
        Func::Ge,
        Func::Json,
        Func::Split,
        Func::Join,
        Func::Title,
        Func::Lower,
        Func::Upper,
        Func::Pad,
        Func::Truncate,
    ];

    fn name(self) -> &'static str {
        match self {
            Func::And => "and",
            Func::Or => "or",
            Func::Not => "not",
            Func::Len => "len",
            Func::Index => "index",
            Func::Slice => "slice",
            Func::Print => "print",
            Func::Printf => "printf",
            Func::Println => "println",
            Func::Eq => "eq",
            Func::Ne => "ne",
            Func::Lt => "lt",
            Func::Le => "le",
            Func::Gt => "gt",
            Func::Ge => "ge",
            Func::Json => "json",
            Func::Split => "split",
            Func::Join => "join",
            Func::Title => "title",
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Pad => "pad",
            Func::Truncate => "truncate",
        }
    }

    fn lookup(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Minimum and maximum (`None`: variadic) argument counts, as in Go.
    fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::And | Func::Or | Func::Index | Func::Slice | Func::Printf => (1, None),
            Func::Print | Func::Println => (0, None),
            Func::Eq => (2, None),
            Func::Not | Func::Len | Func::Json | Func::Title | Func::Lower | Func::Upper => {
                (1, Some(1))
            }
            Func::Ne
            | Func::Lt
            | Func::Le
            | Func::Gt
            | Func::Ge
            | Func::Split
            | Func::Join
            | Func::Truncate => (2, Some(2)),
            Func::Pad => (3, Some(3)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    If,
    Range,
    With,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::If => "if",
            Control::Range => "range",
            Control::With => "with",
        }
    }
}

/// How an item list ended.
enum ListEnd {
    Eof,
    End(usize),
    Else(usize),
}

/// Deepest nesting of controls and parentheses the parser accepts.
const MAX_NESTING: usize = 100;

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Tok>,
    i: usize,
    vars: Vec<String>,
    range_depth: usize,
    nesting: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, pos: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::at(
            TemplatePhase::Parse,
            self.src,
            pos,
            String::new(),
            message.into(),
        )
    }

    fn peek(&self) -> &Tok {
        // The lexer always ends the stream with Eof, and `next` never moves past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek_second(&self) -> &Tok {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        tok
    }

    fn describe(&self, tok: &Tok) -> String {
        match &tok.kind {
            TokKind::Eof => "EOF".to_owned(),
            TokKind::Keyword(k) => format!("<{}>", k.name()),
            _ => format!("{:?}", self.src.get(tok.pos..tok.end).unwrap_or("")),
        }
    }

    fn unexpected(&self, tok: &Tok, context: &str) -> TemplateError {
        if let TokKind::Error(error) = &tok.kind {
            return error.clone();
        }
        self.error(
            tok.pos,
            format!("unexpected {} in {context}", self.describe(tok)),
        )
    }

    fn enter(&mut self, pos: usize) -> Result<(), TemplateError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.error(pos, "template nested too deeply"));
        }
        Ok(())
    }

    fn expect_close(&mut self, context: &str) -> Result<(), TemplateError> {
        let tok = self.next();
        if tok.kind == TokKind::Close {
            Ok(())
        } else {
            Err(self.unexpected(&tok, context))
        }
    }

    fn parse(mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, end) = self.item_list()?;
        match end {
            ListEnd::Eof => Ok(nodes),
            ListEnd::End(pos) => Err(self.error(pos, "unexpected {{end}}")),
            ListEnd::Else(pos) => Err(self.error(pos, "unexpected {{else}}")),
        }
    }

    fn item_list(&mut self) -> Result<(Vec<Node>, ListEnd), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let tok = self.next();
            match tok.kind {
                TokKind::Text(text) => nodes.push(Node::Text(text)),
                TokKind::Eof => return Ok((nodes, ListEnd::Eof)),
                TokKind::Open => {
                    let first = self.peek().clone();
                    match first.kind {
                        TokKind::Keyword(Keyword::End) => {
                            self.next();
                            self.expect_close("end")?;
                            return Ok((nodes, ListEnd::End(first.pos)));
                        }
                        TokKind::Keyword(Keyword::Else) => {
                            self.next();
                            return Ok((nodes, ListEnd::Else(first.pos)));
                        }
                        TokKind::Keyword(Keyword::If) => {
                            self.next();
                            nodes.push(self.control(Control::If, first.pos)?);
                        }
                        TokKind::Keyword(Keyword::Range) => {
                            self.next();
                            nodes.push(self.control(Control::Range, first.pos)?);
                        }
                        TokKind::Keyword(Keyword::With) => {
                            self.next();
                            nodes.push(self.control(Control::With, first.pos)?);
                        }
                        TokKind::Keyword(k @ (Keyword::Break | Keyword::Continue)) => {
                            self.next();
                            if self.range_depth == 0 {
                                return Err(self.error(
                                    first.pos,
                                    format!("{{{{{}}}}} outside {{{{range}}}}", k.name()),
                                ));
                            }
                            self.expect_close(k.name())?;
                            nodes.push(if k == Keyword::Break {
                                Node::Break
                            } else {
                                Node::Continue
                            });
                        }
                        TokKind::Keyword(
                            k @ (Keyword::Define | Keyword::Template | Keyword::Block),
                        ) => {
                            return Err(self.error(
                                first.pos,
                                format!("{{{{{}}}}} is not supported", k.name()),
                            ));
                        }
                        _ => nodes.push(Node::Action(self.pipeline("command", true)?)),
                    }
                }
                _ => return Err(self.unexpected(&tok, "input")),
            }
        }
    }

    fn control(&mut self, control: Control, pos: usize) -> Result<Node, TemplateError> {
        self.enter(pos)?;
        let mark = self.vars.len();
        let pipe = self.pipeline(control.name(), true)?;
        if control == Control::Range {
            self.range_depth += 1;
        }
        let listed = self.item_list();
        if control == Control::Range {
            self.range_depth -= 1;
        }
        let (body, end) = listed?;
        let otherwise = match end {
            ListEnd::End(_) => Vec::new(),
            ListEnd::Eof => return Err(self.error(self.src.len(), "unexpected EOF")),
            ListEnd::Else(_) => {
                let after = self.peek().clone();
                let chained = matches!(
                    (control, &after.kind),
                    (Control::If, TokKind::Keyword(Keyword::If))
                        | (Control::With, TokKind::Keyword(Keyword::With))
                );
                if chained {
                    // `{{else if …}}` is `{{else}}{{if …}}…{{end}}` sharing one `{{end}}`.
                    self.next();
                    vec![self.control(control, after.pos)?]
                } else {
                    self.expect_close("else")?;
                    let (list, end) = self.item_list()?;
                    match end {
                        ListEnd::End(_) => list,
                        ListEnd::Else(p) => {
                            return Err(self.error(p, "expected end; found {{else}}"));
                        }
                        ListEnd::Eof => {
                            return Err(self.error(self.src.len(), "unexpected EOF"));
                        }
                    }
                }
            }
        };
        self.vars.truncate(mark);
        self.nesting -= 1;
        Ok(match control {
            Control::If => Node::If {
                pipe,
                then: body,
                otherwise,
            },
            Control::With => Node::With {
                pipe,
                then: body,
                otherwise,
            },
            Control::Range => Node::Range {
                pipe,
                body,
                otherwise,
            },
        })
    }

    /// A pipeline up to `}}` (`until_close`) or `)`.
    fn pipeline(&mut self, context: &str, until_close: bool) -> Result<Pipeline, TemplateError> {
        let start = self.peek().pos;
        let mut decl = Vec::new();
        let mut assign = false;
        loop {
            let tok = self.peek().clone();
            let TokKind::Var(name, path) = &tok.kind else {
                break;
            };
            if !path.is_empty() {
                break;
            }
            match self.peek_second().kind {
                TokKind::Declare | TokKind::Assign => {
                    assign = self.peek_second().kind == TokKind::Assign;
                    self.next();
                    self.next();
                    if assign && !self.vars.contains(name) {
                        return Err(self.error(tok.pos, format!("undefined variable {name:?}")));
                    }
                    decl.push(name.clone());
                    self.vars.push(name.clone());
                    break;
                }
                TokKind::Comma => {
                    self.next();
                    self.next();
                    decl.push(name.clone());
                    self.vars.push(name.clone());
                    if context == "range" && decl.len() < 2 {
                        match self.peek().kind {
                            TokKind::Var(..) | TokKind::Close | TokKind::RParen => continue,
                            _ => {
                                return Err(
                                    self.error(tok.pos, "range can only initialize variables")
                                );
                            }
                        }
                    }
                    return Err(self.error(tok.pos, format!("too many declarations in {context}")));
                }
                _ => break,
            }
        }
        let mut cmds = Vec::new();
        let end;
        loop {
            let tok = self.peek().clone();
            match tok.kind {
                TokKind::Close if until_close => {
                    self.next();
                    end = tok.pos;
                    break;
                }
                TokKind::RParen if !until_close => {
                    self.next();
                    end = tok.pos;
                    break;
                }
                TokKind::Bool(_)
                | TokKind::Number(_)
                | TokKind::Str(_)
                | TokKind::Dot
                | TokKind::Field(_)
                | TokKind::Ident(_)
                | TokKind::Nil
                | TokKind::Var(..)
                | TokKind::LParen => cmds.push(self.command()?),
                _ => return Err(self.unexpected(&tok, context)),
            }
        }
        if cmds.is_empty() {
            return Err(self.error(start, format!("missing value for {context}")));
        }
        for (i, cmd) in cmds.iter().enumerate().skip(1) {
            if matches!(
                cmd.args.first().map(|a| &a.term),
                Some(Term::Literal(_) | Term::Dot | Term::Nil)
            ) {
                return Err(self.error(
                    cmd.at.pos,
                    format!("non executable command in pipeline stage {}", i + 1),
                ));
            }
        }
        Ok(Pipeline {
            at: At::span(start, end),
            decl,
            assign,
            cmds,
        })
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let start = self.peek().pos;
        let mut end = start;
        let mut args = Vec::new();
        loop {
            if let Some(arg) = self.operand()? {
                end = arg.at.end;
                args.push(arg);
            }
            let tok = self.peek().clone();
            match tok.kind {
                TokKind::Pipe => {
                    self.next();
                    break;
                }
                TokKind::Close | TokKind::RParen => break,
                TokKind::Bool(_)
                | TokKind::Number(_)
                | TokKind::Str(_)
                | TokKind::Dot
                | TokKind::Field(_)
                | TokKind::Ident(_)
                | TokKind::Nil
                | TokKind::Var(..)
                | TokKind::LParen
                    if tok.space_before => {}
                _ => return Err(self.unexpected(&tok, "operand")),
            }
        }
        if args.is_empty() {
            return Err(self.error(start, "empty command"));
        }
        Ok(Command {
            at: At::span(start, end),
            args,
        })
    }

    /// A term and any field chain glued to it, positioned as Go positions
    /// it: a chain `.A.B` or `$x.A` is reported at its second element.
    fn operand(&mut self) -> Result<Option<Arg>, TemplateError> {
        let start = self.peek().pos;
        let Some(term) = self.term()? else {
            return Ok(None);
        };
        let end = self.toks[self.i.saturating_sub(1)].end;
        let pos = match &term {
            Term::Field(path) if path.len() > 1 => start + 1 + path[0].len(),
            Term::Var(name, path) if !path.is_empty() => start + name.len(),
            _ => start,
        };
        let tok = self.peek().clone();
        let chain = match &tok.kind {
            TokKind::Field(chain) if !tok.space_before => chain,
            _ => {
                return Ok(Some(Arg {
                    term,
                    at: At { pos, start, end },
                }));
            }
        };
        self.next();
        let at = At {
            pos: tok.pos,
            start,
            end: tok.end,
        };
        let term = match term {
            Term::Sub(pipe, mut fields) => {
                fields.extend(chain.iter().cloned());
                Term::Sub(pipe, fields)
            }
            Term::Var(name, mut fields) => {
                fields.extend(chain.iter().cloned());
                Term::Var(name, fields)
            }
            Term::Field(mut fields) => {
                fields.extend(chain.iter().cloned());
                Term::Field(fields)
            }
            _ => {
                return Err(self.error(tok.pos, "unexpected . after term"));
            }
        };
        Ok(Some(Arg { term, at }))
    }

    fn term(&mut self) -> Result<Option<Term>, TemplateError> {
        let tok = self.peek().clone();
        let term = match tok.kind {
            TokKind::Ident(name) => match Func::lookup(&name) {
                Some(f) => Term::Func(f),
                None => return Err(self.error(tok.pos, format!("function {name:?} not defined"))),
            },
            TokKind::Dot => Term::Dot,
            TokKind::Nil => Term::Nil,
            TokKind::Bool(b) => Term::Literal(Value::Bool(b)),
            TokKind::Number(n) => Term::Literal(n),
            TokKind::Str(s) => Term::Literal(Value::String(s)),
            TokKind::Field(path) => Term::Field(path),
            TokKind::Var(name, path) => {
                if !self.vars.contains(&name) {
                    return Err(self.error(tok.pos, format!("undefined variable {name:?}")));
                }
                Term::Var(name, path)
            }
            TokKind::LParen => {
                self.next();
                self.enter(tok.pos)?;
                let pipe = self.pipeline("parenthesized pipeline", false)?;
                self.nesting -= 1;
                return Ok(Some(Term::Sub(Box::new(pipe), Vec::new())));
            }
            _ => return Ok(None),
        };
        self.next();
        Ok(Some(term))
    }
}

// ---------------------------------------------------------------------------
// Templates: evaluation
// ---------------------------------------------------------------------------

/// A compiled `--format` template: a subset of Go's `text/template` with
/// docker's functions, rendered against JSON data.
///
/// Supported: text, `{{.Field}}`, `{{.A.B}}`, `{{.}}`, `$` and `$var`
/// (`{{$x := …}}`, `{{$x = …}}`), pipelines `{{.X | f}}`, parentheses,
/// `if`/`else if`/`else`, `with`/`else with`, `range` (with `$i, $e :=`,
/// `else`, `break`, `continue`), comments, `{{-`/`-}}` trim markers, and the
/// functions `and or not len index slice print printf println eq ne lt le gt
/// ge` (Go) and `json split join title lower upper pad truncate` (docker).
/// Values print like Go: `<no value>` for missing or null, `map[k:v]`, `[a b]`.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    nodes: Vec<Node>,
    missing_key_error: bool,
}

impl Template {
    /// Parses template text (already preprocessed; see [`preprocess_format`]).
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let toks = Lexer::new(source).run();
        let parser = Parser {
            src: source,
            toks,
            i: 0,
            vars: vec!["$".to_owned()],
            range_depth: 0,
            nesting: 0,
        };
        let nodes = parser.parse()?;
        Ok(Self {
            source: source.to_owned(),
            nodes,
            missing_key_error: false,
        })
    }

    /// Makes a missing map key an error instead of `<no value>` (Go's
    /// `missingkey=error`, which `docker inspect` uses on raw JSON).
    pub fn missing_key_error(mut self) -> Self {
        self.missing_key_error = true;
        self
    }

    /// The template text.
    #[cfg(test)]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template with `data` as `.` and `$`.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut exec = Exec::new(self, data, false);
        exec.walk(&Val::Json(data.clone()), &self.nodes)?;
        Ok(exec.out)
    }

    /// Renders the header row of a table template against the header labels,
    /// as docker does: the string functions pass their argument through, and
    /// an error leaves whatever was written before it.
    fn render_header(&self, labels: &Value) -> String {
        let mut exec = Exec::new(self, labels, true);
        // docker ignores header execution errors and keeps the partial output.
        let _ = exec.walk(&Val::Json(labels.clone()), &self.nodes);
        exec.out
    }
}

/// A value during evaluation: Go distinguishes "no value" (a missing map key)
/// from a JSON null only in `missingkey=error` mode, but both print `<no value>`.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Missing,
    Json(Value),
}

impl Val {
    fn str(s: impl Into<String>) -> Self {
        Val::Json(Value::String(s.into()))
    }

    fn as_json(&self) -> Option<&Value> {
        match self {
            Val::Missing | Val::Json(Value::Null) => None,
            Val::Json(v) => Some(v),
        }
    }
}

/// Go's truth: false for missing, null, false, 0, "", and empty arrays/maps.
fn truth(v: &Val) -> bool {
    match v.as_json() {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                i != 0
            } else if let Some(u) = n.as_u64() {
                u != 0
            } else {
                n.as_f64().is_some_and(|f| f != 0.0)
            }
        }
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Null) => false,
    }
}

/// The Go type docker users would see in error messages.
fn go_type(v: &Val) -> &'static str {
    match v {
        Val::Missing | Val::Json(Value::Null) => "<nil>",
        Val::Json(Value::Bool(_)) => "bool",
        Val::Json(Value::Number(n)) if n.is_i64() || n.is_u64() => "int",
        Val::Json(Value::Number(_)) => "float64",
        Val::Json(Value::String(_)) => "string",
        Val::Json(Value::Array(_)) => "[]interface {}",
        Val::Json(Value::Object(_)) => "map[string]interface {}",
    }
}

/// An integer argument, if the value is one.
fn as_int(v: &Val) -> Option<i64> {
    match v {
        Val::Json(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
}

/// What a walk over a list of nodes ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'t> {
    src: &'t str,
    strict: bool,
    header: bool,
    vars: Vec<(String, Val)>,
    out: String,
    /// The node being evaluated, for error messages.
    at: At,
}

impl<'t> Exec<'t> {
    fn new(template: &'t Template, root: &Value, header: bool) -> Self {
        Self {
            src: &template.source,
            strict: template.missing_key_error,
            header,
            vars: vec![("$".to_owned(), Val::Json(root.clone()))],
            out: String::new(),
            at: At::default(),
        }
    }

    fn fail(&self, message: impl Into<String>) -> TemplateError {
        self.fail_at(self.at, message.into())
    }

    /// An execution error at `at`, with Go's context: the node's text, cut to 20 characters.
    fn fail_at(&self, at: At, message: String) -> TemplateError {
        let raw = self.src.get(at.start..at.end).unwrap_or("").trim();
        let context = if raw.chars().count() > 20 {
            format!("{}...", raw.chars().take(20).collect::<String>())
        } else {
            raw.to_owned()
        };
        TemplateError::at(TemplatePhase::Exec, self.src, at.pos, context, message)
    }

    fn walk(&mut self, dot: &Val, nodes: &[Node]) -> Result<Flow, TemplateError> {
        for node in nodes {
            let flow = self.walk_node(dot, node)?;
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn walk_node(&mut self, dot: &Val, node: &Node) -> Result<Flow, TemplateError> {
        match node {
            Node::Text(text) => {
                self.out.push_str(text);
                Ok(Flow::Normal)
            }
            Node::Action(pipe) => {
                let value = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    print_top(&mut self.out, &value);
                }
                Ok(Flow::Normal)
            }
            Node::If {
                pipe,
                then,
                otherwise,
            } => {
                let mark = self.vars.len();
                let value = self.eval_pipeline(dot, pipe)?;
                let flow = if truth(&value) {
                    self.walk(dot, then)
                } else {
                    self.walk(dot, otherwise)
                };
                self.vars.truncate(mark);
                flow
            }
            Node::With {
                pipe,
                then,
                otherwise,
            } => {
                let mark = self.vars.len();
                let value = self.eval_pipeline(dot, pipe)?;
                let flow = if truth(&value) {
                    self.walk(&value, then)
                } else {
                    self.walk(dot, otherwise)
                };
                self.vars.truncate(mark);
                flow
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => {
                let mark = self.vars.len();
                let result = self.walk_range(dot, pipe, body, otherwise);
                self.vars.truncate(mark);
                result.map(|()| Flow::Normal)
            }
            Node::Break => Ok(Flow::Break),
            Node::Continue => Ok(Flow::Continue),
        }
    }

    fn walk_range(
        &mut self,
        dot: &Val,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
    ) -> Result<(), TemplateError> {
        let value = self.eval_pipeline(dot, pipe)?;
        self.at = pipe.at;
        let items: Vec<(Value, Value)> = match value.as_json() {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (Value::from(i), item.clone()))
                .collect(),
            Some(Value::Object(map)) => {
                let mut entries: Vec<(Value, Value)> = map
                    .iter()
                    .map(|(k, v)| (Value::String(k.clone()), v.clone()))
                    .collect();
                entries.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
                entries
            }
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                if pipe.decl.len() > 1 {
                    return Err(self.fail(format!(
                        "can't use {} to iterate over more than one variable",
                        go_v_string(&Value::Number(n.clone()))
                    )));
                }
                (0..n.as_u64().unwrap_or(0))
                    .map(|i| (Value::from(i), Value::from(i)))
                    .collect()
            }
            Some(other) => {
                return Err(self.fail(format!("range can't iterate over {}", go_v_string(other))));
            }
        };
        if items.is_empty() {
            self.walk(dot, otherwise)?;
            return Ok(());
        }
        for (key, item) in items {
            match pipe.decl.as_slice() {
                [element] => self.set_var(element, Val::Json(item.clone())),
                [index, element, ..] => {
                    self.set_var(index, Val::Json(key));
                    self.set_var(element, Val::Json(item.clone()));
                }
                [] => {}
            }
            let inner = self.vars.len();
            let flow = self.walk(&Val::Json(item), body);
            self.vars.truncate(inner);
            if flow? == Flow::Break {
                break;
            }
        }
        Ok(())
    }

    fn set_var(&mut self, name: &str, value: Val) {
        if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }

    fn var(&self, name: &str) -> Result<Val, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.fail(format!("undefined variable: {name}")))
    }

    fn eval_pipeline(&mut self, dot: &Val, pipe: &Pipeline) -> Result<Val, TemplateError> {
        let mut value: Option<Val> = None;
        for cmd in &pipe.cmds {
            self.at = cmd.at;
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Val::Missing);
        for name in &pipe.decl {
            if pipe.assign {
                self.set_var(name, value.clone());
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn eval_command(
        &mut self,
        dot: &Val,
        cmd: &Command,
        last: Option<Val>,
    ) -> Result<Val, TemplateError> {
        let has_args = cmd.args.len() > 1 || last.is_some();
        let Some(first) = cmd.args.first() else {
            return Err(self.fail("empty command"));
        };
        self.at = first.at;
        let not_a_function = |exec: &Self, what: &str| {
            exec.fail(format!("can't give argument to non-function {what}"))
        };
        match &first.term {
            Term::Func(f) => self.call(dot, *f, first.at, cmd.at, &cmd.args[1..], last),
            Term::Field(path) => self.field_chain(dot, path, has_args),
            Term::Var(name, path) => {
                let value = self.var(name)?;
                if path.is_empty() {
                    if has_args {
                        return Err(not_a_function(self, name));
                    }
                    Ok(value)
                } else {
                    self.field_chain(&value, path, has_args)
                }
            }
            Term::Sub(pipe, chain) => {
                let value = self.eval_pipeline(dot, pipe)?;
                self.at = first.at;
                if chain.is_empty() {
                    if has_args {
                        return Err(not_a_function(self, "(pipeline)"));
                    }
                    Ok(value)
                } else {
                    self.field_chain(&value, chain, has_args)
                }
            }
            Term::Dot => {
                if has_args {
                    return Err(not_a_function(self, "."));
                }
                Ok(dot.clone())
            }
            Term::Nil => Err(self.fail("nil is not a command")),
            Term::Literal(value) => {
                if has_args {
                    return Err(not_a_function(self, &go_v_string(value)));
                }
                Ok(Val::Json(value.clone()))
            }
        }
    }

    fn eval_arg(&mut self, dot: &Val, arg: &Arg) -> Result<Val, TemplateError> {
        self.at = arg.at;
        match &arg.term {
            Term::Dot => Ok(dot.clone()),
            Term::Nil => Ok(Val::Json(Value::Null)),
            Term::Literal(value) => Ok(Val::Json(value.clone())),
            Term::Field(path) => self.field_chain(dot, path, false),
            Term::Var(name, path) => {
                let value = self.var(name)?;
                if path.is_empty() {
                    Ok(value)
                } else {
                    self.field_chain(&value, path, false)
                }
            }
            Term::Sub(pipe, chain) => {
                let value = self.eval_pipeline(dot, pipe)?;
                self.at = arg.at;
                if chain.is_empty() {
                    Ok(value)
                } else {
                    self.field_chain(&value, chain, false)
                }
            }
            Term::Func(f) => self.call(dot, *f, arg.at, arg.at, &[], None),
        }
    }

    /// `.A.B.C` on `receiver`; only the last field may have arguments (an error for map keys).
    fn field_chain(
        &self,
        receiver: &Val,
        path: &[String],
        has_args: bool,
    ) -> Result<Val, TemplateError> {
        let mut current: Option<&Value> = match receiver {
            Val::Missing => None,
            Val::Json(v) => Some(v),
        };
        for (i, name) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            current = match current {
                Some(Value::Object(map)) => {
                    if last && has_args {
                        return Err(self.fail(format!("{name} is not a method but has arguments")));
                    }
                    match map.get(name) {
                        Some(v) => Some(v),
                        None if self.strict => {
                            return Err(self.fail(format!("map has no entry for key {name:?}")));
                        }
                        None => None,
                    }
                }
                // Like a nil pointer in docker's typed data: an error, not "<no value>".
                Some(Value::Null) => {
                    return Err(self.fail(format!("nil pointer evaluating interface {{}}.{name}")));
                }
                None => {
                    if self.strict {
                        return Err(self.fail(format!("nil data; no entry for key {name:?}")));
                    }
                    None
                }
                Some(other) => {
                    return Err(self.fail(format!(
                        "can't evaluate field {name} in type {}",
                        go_type(&Val::Json(other.clone()))
                    )));
                }
            };
        }
        Ok(current.map_or(Val::Missing, |v| Val::Json(v.clone())))
    }

    /// Calls a function. Like Go, argument count errors point at the function
    /// name, type errors at the argument, and errors returned by the function
    /// at the whole command.
    fn call(
        &mut self,
        dot: &Val,
        func: Func,
        name_at: At,
        cmd_at: At,
        terms: &[Arg],
        last: Option<Val>,
    ) -> Result<Val, TemplateError> {
        self.at = name_at;
        let count = terms.len() + usize::from(last.is_some());
        let (min, max) = func.arity();
        if count < min || max.is_some_and(|max| count > max) {
            let want = match max {
                Some(max) if max == min => format!("{min}"),
                _ => format!("at least {min}"),
            };
            return Err(self.fail(format!(
                "wrong number of args for {}: want {want} got {count}",
                func.name()
            )));
        }
        if matches!(func, Func::And | Func::Or) {
            // Go evaluates and/or lazily and returns the deciding argument.
            let mut result = Val::Missing;
            for term in terms {
                let value = self.eval_arg(dot, term)?;
                if truth(&value) == (func == Func::Or) {
                    return Ok(value);
                }
                result = value;
            }
            return Ok(last.unwrap_or(result));
        }
        let mut args = Vec::with_capacity(count);
        let mut ats = Vec::with_capacity(count);
        for term in terms {
            args.push(self.eval_arg(dot, term)?);
            ats.push(term.at);
        }
        if let Some(value) = last {
            // A piped value is checked where evaluation last stood.
            args.push(value);
            ats.push(self.at);
        }
        let call = Call {
            exec: self,
            func,
            args: &args,
            ats: &ats,
            cmd_at,
        };
        call.apply()
    }
}

/// One function call being applied: its evaluated arguments and where each came from.
struct Call<'e, 't> {
    exec: &'e Exec<'t>,
    func: Func,
    args: &'e [Val],
    ats: &'e [At],
    cmd_at: At,
}

impl Call<'_, '_> {
    fn fail_at(&self, at: At, message: String) -> TemplateError {
        self.exec.fail_at(at, message)
    }

    /// An error returned by the function itself: "error calling f: …".
    fn error(&self, message: impl fmt::Display) -> TemplateError {
        self.fail_at(
            self.cmd_at,
            format!("error calling {}: {message}", self.func.name()),
        )
    }

    fn string(&self, i: usize) -> Result<String, TemplateError> {
        match &self.args[i] {
            Val::Json(Value::String(s)) => Ok(s.clone()),
            Val::Missing | Val::Json(Value::Null) => {
                Err(self.fail_at(self.ats[i], "invalid value; expected string".to_owned()))
            }
            other => Err(self.fail_at(
                self.ats[i],
                format!(
                    "wrong type for value; expected string; got {}",
                    go_type(other)
                ),
            )),
        }
    }

    fn int(&self, i: usize) -> Result<i64, TemplateError> {
        as_int(&self.args[i]).ok_or_else(|| {
            self.fail_at(
                self.ats[i],
                format!(
                    "wrong type for value; expected int; got {}",
                    go_type(&self.args[i])
                ),
            )
        })
    }

    fn apply(&self) -> Result<Val, TemplateError> {
        let args = self.args;
        let bool_val = |b: bool| Ok(Val::Json(Value::Bool(b)));
        // docker renders table headers with pass-through string functions.
        if self.exec.header
            && matches!(
                self.func,
                Func::Json
                    | Func::Split
                    | Func::Join
                    | Func::Title
                    | Func::Lower
                    | Func::Upper
                    | Func::Truncate
            )
        {
            return Ok(Val::str(self.string(0)?));
        }
        match self.func {
            Func::And | Func::Or => Err(self.error("evaluated lazily")),
            Func::Not => bool_val(!truth(&args[0])),
            Func::Len => {
                let len = match &args[0] {
                    Val::Json(Value::String(s)) => s.len(),
                    Val::Json(Value::Array(a)) => a.len(),
                    Val::Json(Value::Object(m)) => m.len(),
                    Val::Missing | Val::Json(Value::Null) => {
                        return Err(self.error("len of nil pointer"));
                    }
                    other => return Err(self.error(format!("len of type {}", go_type(other)))),
                };
                Ok(Val::Json(Value::from(len)))
            }
            Func::Index => index_value(&args[0], &args[1..]).map_err(|m| self.error(m)),
            Func::Slice => slice_value(&args[0], &args[1..]).map_err(|m| self.error(m)),
            Func::Print => Ok(Val::str(go_sprint(args))),
            Func::Println => Ok(Val::str(go_sprintln(args))),
            Func::Printf => Ok(Val::str(go_sprintf(&self.string(0)?, &args[1..]))),
            Func::Eq => {
                for other in &args[1..] {
                    if go_eq(&args[0], other).map_err(|m| self.error(m))? {
                        return bool_val(true);
                    }
                }
                bool_val(false)
            }
            Func::Ne => bool_val(!go_eq(&args[0], &args[1]).map_err(|m| self.error(m))?),
            Func::Lt | Func::Le | Func::Gt | Func::Ge => {
                let ordering = go_cmp(&args[0], &args[1]).map_err(|m| self.error(m))?;
                bool_val(match self.func {
                    Func::Lt => ordering.is_lt(),
                    Func::Le => ordering.is_le(),
                    Func::Gt => ordering.is_gt(),
                    _ => ordering.is_ge(),
                })
            }
            Func::Json => {
                let value = args[0].as_json().cloned().unwrap_or(Value::Null);
                Ok(Val::str(go_json(&value, false)))
            }
            Func::Split => {
                let (s, sep) = (self.string(0)?, self.string(1)?);
                let parts: Vec<Value> = if sep.is_empty() {
                    s.chars().map(|c| Value::String(c.to_string())).collect()
                } else {
                    s.split(sep.as_str())
                        .map(|p| Value::String(p.to_owned()))
                        .collect()
                };
                Ok(Val::Json(Value::Array(parts)))
            }
            Func::Join => {
                // docker's lists are []string; JSON arrays of anything are joined as printed.
                let parts: Vec<String> = match &args[0] {
                    Val::Missing | Val::Json(Value::Null) => Vec::new(),
                    Val::Json(Value::Array(items)) => items.iter().map(go_v_string).collect(),
                    other => {
                        return Err(self.fail_at(
                            self.ats[0],
                            format!(
                                "wrong type for value; expected []string; got {}",
                                go_type(other)
                            ),
                        ));
                    }
                };
                Ok(Val::str(parts.join(&self.string(1)?)))
            }
            Func::Title => Ok(Val::str(go_title(&self.string(0)?))),
            Func::Lower => Ok(Val::str(map_simple_case(&self.string(0)?, false))),
            Func::Upper => Ok(Val::str(map_simple_case(&self.string(0)?, true))),
            Func::Pad => {
                let s = self.string(0)?;
                let (prefix, suffix) = (self.int(1)?, self.int(2)?);
                if s.is_empty() {
                    return Ok(Val::str(s));
                }
                let spaces = |n: i64| " ".repeat(usize::try_from(n).unwrap_or(0));
                Ok(Val::str(format!("{}{s}{}", spaces(prefix), spaces(suffix))))
            }
            Func::Truncate => {
                let s = self.string(0)?;
                let length = usize::try_from(self.int(1)?).unwrap_or(0);
                if s.len() < length {
                    return Ok(Val::str(s));
                }
                let mut cut = length;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                Ok(Val::str(&s[..cut]))
            }
        }
    }
}

/// Prints a pipeline's value into the output as Go's template executor does.
fn print_top(out: &mut String, value: &Val) {
    match value.as_json() {
        None => out.push_str("<no value>"),
        Some(Value::String(s)) => out.push_str(s),
        Some(other) => go_fmt_v(out, other),
    }
}

/// Go's `index`: successive indexes into arrays, strings (bytes) and maps. A
/// missing map key gives the map's zero value: `""` when every value is a
/// string (docker's label maps), otherwise no value.
fn index_value(item: &Val, indexes: &[Val]) -> Result<Val, String> {
    let Some(mut current) = item.as_json().cloned() else {
        return Err("index of untyped nil".to_owned());
    };
    for index in indexes {
        current = match current {
            Value::Array(items) => {
                let Some(i) = as_int(index) else {
                    return Err(format!(
                        "cannot index slice/array with type {}",
                        go_type(index)
                    ));
                };
                usize::try_from(i)
                    .ok()
                    .and_then(|i| items.get(i).cloned())
                    .ok_or_else(|| format!("index out of range: {i}"))?
            }
            Value::String(s) => {
                let Some(i) = as_int(index) else {
                    return Err(format!(
                        "cannot index slice/array with type {}",
                        go_type(index)
                    ));
                };
                usize::try_from(i)
                    .ok()
                    .and_then(|i| s.as_bytes().get(i).copied())
                    .map(Value::from)
                    .ok_or_else(|| format!("index out of range: {i}"))?
            }
            Value::Object(map) => {
                let Val::Json(Value::String(key)) = index else {
                    return Err(format!(
                        "value has type {}; should be string",
                        go_type(index)
                    ));
                };
                match map.get(key) {
                    Some(v) => v.clone(),
                    None if map.values().all(Value::is_string) => Value::String(String::new()),
                    None => Value::Null,
                }
            }
            Value::Null => return Err("index of untyped nil".to_owned()),
            other => {
                return Err(format!(
                    "can't index item of type {}",
                    go_type(&Val::Json(other))
                ));
            }
        };
    }
    Ok(Val::Json(current))
}

/// Go's `slice x i j`: a substring (by bytes) or a sub-array.
fn slice_value(item: &Val, indexes: &[Val]) -> Result<Val, String> {
    let Some(value) = item.as_json() else {
        return Err("slice of untyped nil".to_owned());
    };
    if indexes.len() > 2 {
        return Err("too many slice indexes".to_owned());
    }
    let len = match value {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        other => {
            return Err(format!(
                "can't slice item of type {}",
                go_type(&Val::Json(other.clone()))
            ));
        }
    };
    let mut bounds = [0usize, len];
    for (slot, index) in bounds.iter_mut().zip(indexes) {
        let Some(i) = as_int(index) else {
            return Err(format!(
                "cannot index slice/array with type {}",
                go_type(index)
            ));
        };
        *slot = usize::try_from(i)
            .ok()
            .filter(|i| *i <= len)
            .ok_or_else(|| format!("index out of range: {i}"))?;
    }
    let [start, end] = bounds;
    if start > end {
        return Err(format!("invalid slice index: {start} > {end}"));
    }
    Ok(Val::Json(match value {
        Value::String(s) => Value::String(
            s.get(start..end)
                .ok_or_else(|| format!("slice {start}:{end} splits a character"))?
                .to_owned(),
        ),
        Value::Array(a) => Value::Array(a[start..end].to_vec()),
        _ => Value::Null,
    }))
}

/// Comparable forms of a value, for `eq`/`lt`.
enum Basic<'a> {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Other,
}

fn basic(v: &Val) -> Basic<'_> {
    match v.as_json() {
        None => Basic::Nil,
        Some(Value::Bool(b)) => Basic::Bool(*b),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Basic::Int(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Basic::Int(i128::from(u))
            } else {
                Basic::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Some(Value::String(s)) => Basic::Str(s),
        Some(_) => Basic::Other,
    }
}

fn go_eq(a: &Val, b: &Val) -> Result<bool, &'static str> {
    Ok(match (basic(a), basic(b)) {
        (Basic::Nil, Basic::Nil) => true,
        (Basic::Nil, _) | (_, Basic::Nil) => false,
        (Basic::Other, Basic::Other) => return Err("non-comparable type"),
        (Basic::Other, _) | (_, Basic::Other) => return Err("incompatible types for comparison"),
        (Basic::Bool(x), Basic::Bool(y)) => x == y,
        (Basic::Int(x), Basic::Int(y)) => x == y,
        (Basic::Int(x), Basic::Float(y)) | (Basic::Float(y), Basic::Int(x)) => (x as f64) == y,
        (Basic::Float(x), Basic::Float(y)) => x == y,
        (Basic::Str(x), Basic::Str(y)) => x == y,
        _ => return Err("incompatible types for comparison"),
    })
}

fn go_cmp(a: &Val, b: &Val) -> Result<std::cmp::Ordering, &'static str> {
    let unordered = "incompatible types for comparison";
    match (basic(a), basic(b)) {
        (Basic::Int(x), Basic::Int(y)) => Ok(x.cmp(&y)),
        (Basic::Int(x), Basic::Float(y)) => (x as f64).partial_cmp(&y).ok_or(unordered),
        (Basic::Float(x), Basic::Int(y)) => x.partial_cmp(&(y as f64)).ok_or(unordered),
        (Basic::Float(x), Basic::Float(y)) => x.partial_cmp(&y).ok_or(unordered),
        (Basic::Str(x), Basic::Str(y)) => Ok(x.cmp(y)),
        (Basic::Nil | Basic::Bool(_) | Basic::Other, _)
        | (_, Basic::Nil | Basic::Bool(_) | Basic::Other) => Err("invalid type for comparison"),
        _ => Err(unordered),
    }
}

/// Go's `strings.Title`: upper-cases the first letter of each word.
fn go_title(s: &str) -> String {
    let is_separator = |c: char| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else if c.is_alphanumeric() {
            false
        } else {
            c.is_whitespace()
        }
    };
    let mut prev = ' ';
    s.chars()
        .map(|c| {
            let mapped = if is_separator(prev) {
                simple_case(c, true)
            } else {
                c
            };
            prev = c;
            mapped
        })
        .collect()
}

/// Go's one-to-one case mapping (`unicode.ToUpper`/`ToLower`): characters
/// whose mapping is several characters (like `ß`) are left alone.
fn simple_case(c: char, upper: bool) -> char {
    let mut mapped = if upper {
        c.to_uppercase().collect::<Vec<char>>()
    } else {
        c.to_lowercase().collect::<Vec<char>>()
    };
    match (mapped.pop(), mapped.is_empty()) {
        (Some(m), true) => m,
        _ => c,
    }
}

fn map_simple_case(s: &str, upper: bool) -> String {
    s.chars().map(|c| simple_case(c, upper)).collect()
}

/// An argument as Go's `fmt` prints it with `%v`.
fn fmt_arg(v: &Val) -> String {
    match v.as_json() {
        None => "<nil>".to_owned(),
        Some(value) => go_v_string(value),
    }
}

/// Go's `fmt.Sprint`: spaces between operands when neither side is a string.
fn go_sprint(args: &[Val]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, arg) in args.iter().enumerate() {
        let is_string = matches!(arg, Val::Json(Value::String(_)));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        out.push_str(&fmt_arg(arg));
        prev_string = is_string;
    }
    out
}

/// Go's `fmt.Sprintln`: operands separated by spaces, then a newline.
fn go_sprintln(args: &[Val]) -> String {
    let mut out = args.iter().map(fmt_arg).collect::<Vec<_>>().join(" ");
    out.push('\n');
    out
}

/// One `%` directive's flags.
#[derive(Debug, Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// Go's `fmt.Sprintf` for the common verbs (`v s d q f F e E g G t x X o b c %`),
/// with flags `-+ 0`, width and precision.
fn go_sprintf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next_arg = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                chars.next();
            }
            n
        };
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next_arg += 1;
        out.push_str(&format_directive(verb, spec, arg));
    }
    if next_arg < args.len() {
        let extra: Vec<String> = args[next_arg..]
            .iter()
            .map(|a| match a.as_json() {
                None => "<nil>".to_owned(),
                Some(v) => format!("{}={}", go_type(a), go_v_string(v)),
            })
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn format_directive(verb: char, spec: Spec, arg: &Val) -> String {
    let bad = || match arg.as_json() {
        None => format!("%!{verb}(<nil>)"),
        Some(v) => format!("%!{verb}({}={})", go_type(arg), go_v_string(v)),
    };
    let signed = |s: String, negative: bool| -> (String, String) {
        let sign = if negative {
            "-"
        } else if spec.plus {
            "+"
        } else if spec.space {
            " "
        } else {
            ""
        };
        (sign.to_owned(), s)
    };
    let (sign, body, numeric) = match (arg.as_json(), verb) {
        (None, 'v') => (String::new(), "<nil>".to_owned(), false),
        (None, _) => return bad(),
        (Some(Value::Bool(b)), 'v' | 't') => (String::new(), b.to_string(), false),
        (Some(Value::String(s)), 'v' | 's') => {
            let body = match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            };
            (String::new(), body, false)
        }
        (Some(Value::String(s)), 'q') => (String::new(), go_quote(s), false),
        (Some(Value::String(s)), 'x' | 'X') => {
            let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            let hex = if verb == 'X' { hex.to_uppercase() } else { hex };
            (String::new(), hex, false)
        }
        (Some(Value::Number(n)), _) if n.is_i64() || n.is_u64() => {
            let negative = n.as_i64().is_some_and(|i| i < 0);
            let magnitude: u128 = match n.as_i64() {
                Some(i) => u128::from(i.unsigned_abs()),
                None => u128::from(n.as_u64().unwrap_or(0)),
            };
            let body = match verb {
                'v' | 'd' => magnitude.to_string(),
                'x' => format!("{magnitude:x}"),
                'X' => format!("{magnitude:X}"),
                'o' => format!("{magnitude:o}"),
                'b' => format!("{magnitude:b}"),
                'c' => {
                    return u32::try_from(magnitude)
                        .ok()
                        .and_then(char::from_u32)
                        .map_or_else(|| "\u{FFFD}".to_owned(), String::from);
                }
                'q' => {
                    let c = u32::try_from(magnitude)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('\u{FFFD}');
                    let quoted = go_quote(&c.to_string());
                    return format!("'{}'", &quoted[1..quoted.len() - 1]);
                }
                _ => return bad(),
            };
            let (sign, body) = signed(body, negative);
            (sign, body, true)
        }
        (Some(Value::Number(n)), _) => {
            let f = n.as_f64().unwrap_or(0.0);
            let negative = f.is_sign_negative();
            let abs = f.abs();
            let body = match verb {
                'v' | 'g' => go_format_g(abs, spec.precision),
                'G' => go_format_g(abs, spec.precision).to_uppercase(),
                'f' | 'F' => {
                    let prec = spec.precision.unwrap_or(6);
                    let (digits, dp) = float_digits_fixed(abs, prec);
                    fmt_f(false, &digits, dp, prec)
                }
                'e' | 'E' => {
                    let prec = spec.precision.unwrap_or(6);
                    let (digits, dp) = float_digits(abs, Some(prec + 1));
                    let s = fmt_e(false, &digits, dp, prec);
                    if verb == 'E' { s.to_uppercase() } else { s }
                }
                _ => return bad(),
            };
            let (sign, body) = signed(body, negative);
            (sign, body, true)
        }
        (Some(value @ (Value::Array(_) | Value::Object(_))), 'v' | 's') => {
            (String::new(), go_v_string(value), false)
        }
        _ => return bad(),
    };
    let len = sign.chars().count() + body.chars().count();
    let width = spec.width.unwrap_or(0);
    if len >= width {
        return format!("{sign}{body}");
    }
    let fill = width - len;
    if spec.minus {
        format!("{sign}{body}{}", " ".repeat(fill))
    } else if spec.zero && numeric {
        format!("{sign}{}{body}", "0".repeat(fill))
    } else {
        format!("{}{sign}{body}", " ".repeat(fill))
    }
}

/// Digits of `|f|` rounded to `prec` places after the decimal point.
fn float_digits_fixed(f: f64, prec: usize) -> (Vec<u8>, i32) {
    if f == 0.0 || !f.is_finite() {
        return (Vec::new(), 0);
    }
    let text = format!("{:.*}", prec, f.abs());
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let int_part = int_part.trim_start_matches('0');
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let mut dp = int_part.len() as i32;
    while digits.first() == Some(&0) {
        digits.remove(0);
        dp -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        return (Vec::new(), 0);
    }
    (digits, dp)
}

// ---------------------------------------------------------------------------
// Human units (github.com/docker/go-units)
// ---------------------------------------------------------------------------

const DECIMAL_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY_UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

fn size_and_unit(mut size: f64, base: f64, units: &[&'static str; 9]) -> (f64, &'static str) {
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, units[i])
}

/// Sizes as `docker image ls` / `docker ps -s` / stats NET I/O print them:
/// `units.HumanSizeWithPrecision(size, 3)`, decimal units ("4.26MB", "1.24kB", "0B").
pub fn human_size(bytes: f64) -> String {
    human_size_with_precision(bytes, 3)
}

/// go-units `HumanSizeWithPrecision`: decimal units with `precision`
/// significant digits (`%.*g`), e.g. 4 digits for `units.HumanSize`.
pub fn human_size_with_precision(bytes: f64, precision: usize) -> String {
    let (size, unit) = size_and_unit(bytes, 1000.0, &DECIMAL_UNITS);
    format!("{}{unit}", go_format_g(size, Some(precision)))
}

/// go-units `BytesSize`, as `docker stats` MEM USAGE prints memory: binary
/// units with four significant digits ("1.953MiB", "2GiB").
pub fn bytes_size(bytes: f64) -> String {
    let (size, unit) = size_and_unit(bytes, 1024.0, &BINARY_UNITS);
    format!("{}{unit}", go_format_g(size, Some(4)))
}

/// go-units `HumanDuration`: "Less than a second", "1 second", "N seconds",
/// "About a minute", "N minutes", "About an hour", "N hours", "N days",
/// "N weeks", "N months", "N years", with go-units' thresholds.
pub fn human_duration(d: TimeDelta) -> String {
    let ns: i64 = d.num_nanoseconds().unwrap_or(if d < TimeDelta::zero() {
        i64::MIN
    } else {
        i64::MAX
    });
    let seconds = ns / 1_000_000_000;
    if seconds < 1 {
        return "Less than a second".to_owned();
    }
    if seconds == 1 {
        return "1 second".to_owned();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = ns / 60_000_000_000;
    if minutes == 1 {
        return "About a minute".to_owned();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go: int(d.Hours() + 0.5), with Hours() computed as whole hours plus a fraction.
    const HOUR: i64 = 3_600_000_000_000;
    let exact_hours = (ns / HOUR) as f64 + (ns % HOUR) as f64 / HOUR as f64;
    let hours = (exact_hours + 0.5) as i64;
    if hours == 1 {
        return "About an hour".to_owned();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (exact_hours as i64) / 24 / 365)
}

/// docker's relative times (`CREATED` columns): "<human duration> ago".
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", human_duration(now.signed_duration_since(t)))
}

/// Why a size like `--memory 32m` could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// No digits, a negative number, or too large.
    Size { input: String },
    /// The number part is not a number (Go's `strconv.ParseFloat` error).
    Number { number: String },
    /// The unit suffix is not one of b, k, m, g, t, p (+ optional b / ib).
    Suffix { suffix: String },
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size { input } => write!(f, "invalid size: '{input}'"),
            Self::Number { number } => {
                write!(f, "strconv.ParseFloat: parsing {number:?}: invalid syntax")
            }
            Self::Suffix { suffix } => write!(f, "invalid suffix: '{suffix}'"),
        }
    }
}

impl std::error::Error for SizeError {}

/// go-units `RAMInBytes`: "32m", "1g", "512k", "1024", "1.5g", "32 MiB" …;
/// binary multiples, case-insensitive, optional trailing "b" or "ib"; the
/// result is truncated to whole bytes.
pub fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let invalid = || SizeError::Size {
        input: s.to_owned(),
    };
    let Some(sep) = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ') else {
        return Err(invalid());
    };
    let (number, suffix) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..sep + 1], &s[sep + 1..])
    };
    let size = go_parse_float(number).ok_or_else(|| SizeError::Number {
        number: number.to_owned(),
    })?;
    if size < 0.0 {
        return Err(invalid());
    }
    let bad_suffix = |sfx: &str| SizeError::Suffix {
        suffix: sfx.to_owned(),
    };
    let multiplier: f64 = if suffix.is_empty() {
        1.0
    } else {
        if suffix.len() > 3 {
            return Err(bad_suffix(suffix));
        }
        let lower = suffix.to_lowercase();
        let bytes = lower.as_bytes();
        if bytes[0] == b'b' {
            if bytes.len() > 1 {
                return Err(bad_suffix(&lower));
            }
            1.0
        } else {
            let shift = match bytes[0] {
                b'k' => 10,
                b'm' => 20,
                b'g' => 30,
                b't' => 40,
                b'p' => 50,
                _ => return Err(bad_suffix(&lower)),
            };
            let rest = &lower[1..];
            if !(rest.is_empty() || rest == "b" || rest == "ib") {
                return Err(bad_suffix(&lower));
            }
            (1u64 << shift) as f64
        }
    };
    let total = size * multiplier;
    if total >= 9.223_372_036_854_776e18 {
        return Err(invalid());
    }
    Ok(total as u64)
}

/// Go's `strconv.ParseFloat` for decimal text: optional sign, digits with an
/// optional point, optional exponent.
fn go_parse_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse().ok()
}

/// docker's `TruncateID`: drops an algorithm prefix such as `sha256:` and
/// keeps the first 12 characters.
pub fn short_id(id: &str) -> String {
    let id = match id.find(':') {
        Some(i) => &id[i + 1..],
        None => id,
    };
    id.chars().take(12).collect()
}

/// What `docker ps` needs to know to print a container's STATUS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStatusInput {
    /// The process is alive (also true while paused or restarting).
    pub running: bool,
    /// Frozen by `pause`.
    pub paused: bool,
    /// Waiting for its restart policy to start it again.
    pub restarting: bool,
    /// Being removed.
    pub removal_in_progress: bool,
    /// Could not be removed and is left dead.
    pub dead: bool,
    /// Last exit code.
    pub exit_code: i64,
    /// `None` when the container never started.
    pub started_at: Option<DateTime<Utc>>,
    /// `None` when the container never stopped.
    pub finished_at: Option<DateTime<Utc>>,
    /// Health status when a healthcheck is configured: "starting", "healthy" or "unhealthy".
    pub health: Option<String>,
}

/// The STATUS column of `docker ps` (moby's `State.String()`): "Up 5 seconds",
/// "Up 3 hours (Paused)", "Up 2 minutes (healthy)", "Restarting (1) 3 seconds
/// ago", "Exited (137) 2 minutes ago", "Created", "Dead", "Removal In Progress".
pub fn container_status(state: &ContainerStatusInput, now: DateTime<Utc>) -> String {
    let since = |t: Option<DateTime<Utc>>| {
        human_duration(now.signed_duration_since(t.unwrap_or(DateTime::<Utc>::MIN_UTC)))
    };
    if state.running {
        if state.paused {
            return format!("Up {} (Paused)", since(state.started_at));
        }
        if state.restarting {
            return format!(
                "Restarting ({}) {} ago",
                state.exit_code,
                since(state.finished_at)
            );
        }
        if let Some(health) = &state.health {
            let health = if health == "starting" {
                "health: starting"
            } else {
                health.as_str()
            };
            return format!("Up {} ({health})", since(state.started_at));
        }
        return format!("Up {}", since(state.started_at));
    }
    if state.removal_in_progress {
        return "Removal In Progress".to_owned();
    }
    if state.dead {
        return "Dead".to_owned();
    }
    if state.started_at.is_none() {
        return "Created".to_owned();
    }
    if state.finished_at.is_none() {
        return String::new();
    }
    format!(
        "Exited ({}) {} ago",
        state.exit_code,
        since(state.finished_at)
    )
}

/// The COMMAND column of `docker ps`: the daemon joins path and arguments with
/// spaces (quoting arguments that contain a space in single quotes), the CLI
/// cuts it to 20 columns with `…` unless `--no-trunc`, then Go-quotes it.
pub fn quote_command(path: &str, args: &[String], trunc: bool) -> String {
    let mut command = path.to_owned();
    for arg in args {
        command.push(' ');
        if arg.contains(' ') {
            command.push('\'');
            command.push_str(arg);
            command.push('\'');
        } else {
            command.push_str(arg);
        }
    }
    if trunc {
        command = ellipsis(&command, 20);
    }
    go_quote(&command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, data: &Value) -> String {
        Template::parse(template)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .render(data)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    fn parse_err(template: &str) -> TemplateError {
        match Template::parse(template) {
            Ok(_) => panic!("{template} parsed"),
            Err(e) => e,
        }
    }

    fn exec_err(template: &str, data: &Value) -> TemplateError {
        match Template::parse(template).unwrap().render(data) {
            Ok(out) => panic!("{template} rendered {out:?}"),
            Err(e) => e,
        }
    }

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    fn sample() -> Value {
        json!({
            "Name": "web",
            "State": {"Status": "running"},
            "Labels": {"com.example.app": "web", "tier": "front"},
            "List": ["a", "b"],
            "Items": [{"Name": "n0"}, {"Name": "n1"}],
            "S": "hi",
            "N": 5,
            "Null": null,
        })
    }

    // -- tables -------------------------------------------------------------

    #[test]
    fn table_matches_docker_network_ls() {
        let mut table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
        table.row(strings(&["7fca4eb8c647", "bridge", "bridge", "local"]));
        table.row(strings(&["9f904ee27bf5", "none", "null", "local"]));
        table.row(strings(&["cf03ee007fb4", "host", "host", "local"]));
        assert_eq!(
            table.render(),
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             7fca4eb8c647   bridge    bridge    local\n\
             9f904ee27bf5   none      null      local\n\
             cf03ee007fb4   host      host      local\n"
        );
    }

    #[test]
    fn table_counts_display_columns_not_bytes() {
        let mut table = Table::new(&["NAME", "VALUE"]);
        table.row(strings(&["日本語テキスト", "x"]));
        table.row(strings(&["héllo", "y"]));
        assert_eq!(
            table.render(),
            "NAME             VALUE\n日本語テキスト   x\nhéllo            y\n"
        );
        assert_eq!(tab_text_width("日本"), 4);
        assert_eq!(tab_text_width("héllo"), 5);
        assert_eq!(tab_text_width("e\u{301}"), 1);
    }

    #[test]
    fn table_writes_no_trailing_spaces() {
        let mut table = Table::new(&["A", "B", "C"]);
        table.row(strings(&["a", "", "c"]));
        table.row(strings(&["a", "b", ""]));
        table.row(strings(&["a", "", ""]));
        assert_eq!(
            table.render(),
            "A         B         C\na                   c\na         b\na\n"
        );
    }

    #[test]
    fn table_header_only_and_headerless() {
        assert_eq!(Table::new(&["ID", "NAME"]).render(), "ID        NAME\n");
        let mut quiet = Table::new(&[]);
        quiet.row(strings(&["abc", "x"]));
        assert_eq!(quiet.render(), "abc       x\n");
    }

    #[test]
    fn tabwriter_columns_are_elastic_blocks() {
        // A line without tabs ends the block: the long cell below does not
        // widen the first line's column.
        assert_eq!(
            tabwrite("a\tb\tc\nlong line without tabs\nxxxxxxxxxxxxxxx\ty\n"),
            "a         b         c\nlong line without tabs\nxxxxxxxxxxxxxxx   y\n"
        );
        assert_eq!(
            tabwrite("aaaaaaaaaaaaaaaa\tb\nc\td\n"),
            "aaaaaaaaaaaaaaaa   b\nc                  d\n"
        );
        // A form feed ends the block too.
        assert_eq!(
            tabwrite("aaaaaaaaaaaaaaaa\tb\x0cc\td\n"),
            "aaaaaaaaaaaaaaaa   b\nc         d\n"
        );
        assert_eq!(tabwrite("a\tb"), "a         b");
        assert_eq!(tabwrite("a\t"), "a");
        assert_eq!(tabwrite("x\t\n"), "x\n");
        assert_eq!(tabwrite(""), "");
    }

    #[test]
    fn ellipsis_like_docker() {
        assert_eq!(
            ellipsis("/docker-entrypoint.sh nginx -g 'daemon off;'", 20),
            "/docker-entrypoint.…"
        );
        assert_eq!(ellipsis("short", 20), "short");
        assert_eq!(ellipsis("exactly-twenty-chars", 20), "exactly-twenty-chars");
        assert_eq!(ellipsis("日本語の文字列", 6), "日本…");
        assert_eq!(ellipsis("abc", 1), "a");
        assert_eq!(ellipsis("abc", 0), "");
    }

    // -- --format -----------------------------------------------------------

    fn rows() -> Vec<Value> {
        vec![
            json!({"ID": "abc123", "Name": "web", "Replicas": "1/1"}),
            json!({"ID": "def456", "Name": "database-primary", "Replicas": "0/3"}),
        ]
    }

    const HEADERS: &[(&str, &str)] = &[("ID", "ID"), ("Name", "NAME"), ("Replicas", "REPLICAS")];
    const DEFAULT: &str = "table {{.ID}}\t{{.Name}}\t{{.Replicas}}";

    #[test]
    fn format_selection() {
        assert!(matches!(OutputFormat::parse(None), Ok(OutputFormat::Table)));
        assert!(matches!(
            OutputFormat::parse(Some("")),
            Ok(OutputFormat::Table)
        ));
        assert!(matches!(
            OutputFormat::parse(Some("table")),
            Ok(OutputFormat::Table)
        ));
        assert!(matches!(
            OutputFormat::parse(Some("json")),
            Ok(OutputFormat::Json)
        ));
        match OutputFormat::parse(Some("table {{.ID}}\\t{{.Name}}")) {
            Ok(OutputFormat::TableTemplate(t)) => assert_eq!(t.source(), "{{.ID}}\t{{.Name}}"),
            other => panic!("{other:?}"),
        }
        match OutputFormat::parse(Some("  {{.ID}}\\n ")) {
            Ok(OutputFormat::Template(t)) => assert_eq!(t.source(), "{{.ID}}\n"),
            other => panic!("{other:?}"),
        }
        let err = OutputFormat::parse(Some("{{.ID")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "template parsing error: template: :1: unclosed action"
        );
    }

    #[test]
    fn default_table() {
        let out = OutputFormat::Table
            .render(&rows(), HEADERS, DEFAULT)
            .unwrap();
        assert_eq!(
            out,
            "ID        NAME               REPLICAS\n\
             abc123    web                1/1\n\
             def456    database-primary   0/3\n"
        );
        let empty = OutputFormat::Table.render(&[], HEADERS, DEFAULT).unwrap();
        assert_eq!(empty, "ID        NAME      REPLICAS\n");
    }

    #[test]
    fn table_template_uses_header_labels() {
        let format = OutputFormat::parse(Some("table {{.Name}}: {{upper .Replicas}}")).unwrap();
        assert_eq!(
            format.render(&rows(), HEADERS, DEFAULT).unwrap(),
            "NAME: REPLICAS\nweb: 1/1\ndatabase-primary: 0/3\n"
        );
        let format = OutputFormat::parse(Some("table {{json .Name}}\\t{{lower .ID}}")).unwrap();
        assert_eq!(
            format.render(&rows()[..1], HEADERS, DEFAULT).unwrap(),
            "NAME      ID\n\"web\"     abc123\n"
        );
        // `pad` is not a header pass-through in docker, and unknown fields
        // show Go's "<no value>" in the header.
        let format = OutputFormat::parse(Some("table {{pad .Name 1 1}}|\\t{{.Nope}}")).unwrap();
        assert_eq!(
            format.render(&rows()[..1], HEADERS, DEFAULT).unwrap(),
            " NAME |   <no value>\n web |    <no value>\n"
        );
    }

    #[test]
    fn json_and_plain_templates() {
        let out = OutputFormat::Json
            .render(
                &[json!({"b": 1, "a": "x<y"}), json!({"ID": "1"})],
                HEADERS,
                DEFAULT,
            )
            .unwrap();
        assert_eq!(out, "{\"a\":\"x<y\",\"b\":1}\n{\"ID\":\"1\"}\n");
        assert_eq!(
            OutputFormat::Json.render(&[], HEADERS, DEFAULT).unwrap(),
            ""
        );
        let plain = OutputFormat::parse(Some("{{.Name}}")).unwrap();
        assert_eq!(
            plain.render(&rows(), HEADERS, DEFAULT).unwrap(),
            "web\ndatabase-primary\n"
        );
    }

    // -- templates: values --------------------------------------------------

    #[test]
    fn fields_nested_and_missing() {
        let data = sample();
        assert_eq!(render("{{.Name}}", &data), "web");
        assert_eq!(render("name={{.Name}}!", &data), "name=web!");
        assert_eq!(render("{{.State.Status}}", &data), "running");
        assert_eq!(render("{{.Nope}}", &data), "<no value>");
        assert_eq!(render("{{.Nope.Deeper}}", &data), "<no value>");
        assert_eq!(render("{{.State.Nope}}", &data), "<no value>");
        assert_eq!(render("{{.Null}}", &data), "<no value>");
        // A field of a present null is an error, like a nil pointer in docker's typed data.
        assert_eq!(
            exec_err("{{.Null.X}}", &data).message,
            "nil pointer evaluating interface {}.X"
        );
        assert_eq!(
            render("{{print .Null}} {{print .Nope}}", &data),
            "<nil> <nil>"
        );
    }

    #[test]
    fn values_print_like_go() {
        let data = json!({
            "M": {"b": "x", "a": 1},
            "L": [1, "two", {"k": null}, [true, false]],
            "B": true,
            "I": 42, "F": 1.5, "Big": 1e21, "Mid": 123_456_789.0, "Whole": 100.0,
            "Small": 0.00001, "Neg": -3, "U": 18_446_744_073_709_551_615u64,
        });
        assert_eq!(render("{{.M}}", &data), "map[a:1 b:x]");
        assert_eq!(render("{{.L}}", &data), "[1 two map[k:<nil>] [true false]]");
        assert_eq!(render("{{.B}}", &data), "true");
        assert_eq!(
            render(
                "{{.I}} {{.F}} {{.Big}} {{.Mid}} {{.Whole}} {{.Small}} {{.Neg}} {{.U}}",
                &data
            ),
            "42 1.5 1e+21 1.23456789e+08 100 1e-05 -3 18446744073709551615"
        );
        assert_eq!(
            render("{{.}}", &json!({"b": [], "a": {}})),
            "map[a:map[] b:[]]"
        );
        assert_eq!(
            render(
                "{{1.0}} {{-7}} {{0x1F}} {{'a'}} {{\"s\"}} {{`r\\n`}}",
                &data
            ),
            "1 -7 31 97 s r\\n"
        );
    }

    #[test]
    fn json_function() {
        let data =
            json!({"a": [1, 2], "b": {"c": "<x&y>"}, "F": 1.5, "W": 100.0, "S": "a\"b\n\u{1}"});
        assert_eq!(
            render("{{json .a}} {{json .b}}", &data),
            "[1,2] {\"c\":\"<x&y>\"}"
        );
        assert_eq!(
            render("{{json .F}} {{json .W}} {{json .Missing}}", &data),
            "1.5 100 null"
        );
        assert_eq!(render("{{json .S}}", &data), "\"a\\\"b\\n\\u0001\"");
        assert_eq!(render("{{.b | json}}", &data), "{\"c\":\"<x&y>\"}");
        // Keys come out in the map's own order (insertion order with
        // serde_json's preserve_order feature, sorted without it).
        let mut map = Map::new();
        map.insert("zeta".to_owned(), json!(1));
        map.insert("alpha".to_owned(), json!(2));
        let expected = format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(render("{{json .}}", &Value::Object(map)), expected);
    }

    #[test]
    fn go_json_numbers() {
        let n = |f: f64| go_json_number(&Number::from_f64(f).unwrap());
        assert_eq!(n(1e-7), "1e-7");
        assert_eq!(n(1e21), "1e+21");
        assert_eq!(n(100.0), "100");
        assert_eq!(n(0.1), "0.1");
        assert_eq!(n(123_456_789.0), "123456789");
        assert_eq!(n(1.5e300), "1.5e+300");
        assert_eq!(n(-0.000_001), "-0.000001");
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_format_g(0.0, None), "0");
        assert_eq!(go_format_g(1e6, None), "1e+06");
        assert_eq!(go_format_g(123_456.0, None), "123456");
        assert_eq!(go_format_g(0.0001, None), "0.0001");
        assert_eq!(go_format_g(-2.5, None), "-2.5");
        assert_eq!(go_format_g(999.999, Some(3)), "1e+03");
        assert_eq!(go_format_g(4.26, Some(3)), "4.26");
        assert_eq!(go_format_g(100.0, Some(3)), "100");
        assert_eq!(go_format_g(1.953_125, Some(4)), "1.953");
    }

    #[test]
    fn index_len_and_string_functions() {
        let data = sample();
        assert_eq!(render("{{index .Labels \"tier\"}}", &data), "front");
        assert_eq!(render("[{{index .Labels \"nope\"}}]", &data), "[]");
        assert_eq!(render("{{index .List 1}}", &data), "b");
        assert_eq!(render("{{index .Items 1 \"Name\"}}", &data), "n1");
        assert_eq!(
            render("{{index .M \"x\"}}", &json!({"M": {"a": 1}})),
            "<no value>"
        );
        assert_eq!(render("{{index \"abc\" 0}}", &data), "97");
        assert_eq!(
            render("{{len .List}} {{len \"héllo\"}} {{len .Labels}}", &data),
            "2 6 2"
        );
        assert_eq!(
            render(
                "{{upper \"hello wörld\"}} {{lower \"ÀB\"}} {{upper \"ß\"}}",
                &data
            ),
            "HELLO WÖRLD àb ß"
        );
        assert_eq!(
            render("{{title \"hello world-foo_bar\"}}", &data),
            "Hello World-Foo_bar"
        );
        assert_eq!(render("{{join .List \", \"}}", &data), "a, b");
        assert_eq!(
            render("{{join (split \"a:b:c\" \":\") \"/\"}}", &data),
            "a/b/c"
        );
        assert_eq!(
            render("{{split \"ab\" \"\"}} {{len (split \"\" \",\")}}", &data),
            "[a b] 1"
        );
        assert_eq!(render("{{pad .S 2 1}}|{{pad \"\" 2 1}}|", &data), "  hi ||");
        assert_eq!(
            render("{{truncate .S 1}} {{truncate \"abc\" 5}}", &data),
            "h abc"
        );
        assert_eq!(
            render("{{slice \"abcdef\" 1 3}} {{slice .List 1}}", &data),
            "bc [b]"
        );
        assert_eq!(render("{{println .S}}x", &data), "hi\nx");
        assert_eq!(render("{{println \"a\" 1 true}}", &data), "a 1 true\n");
        assert_eq!(render("{{print \"a\" \"b\" 1 2 \"c\"}}", &data), "ab1 2c");
    }

    #[test]
    fn printf_verbs() {
        let data = json!({"K": "a", "N": 5, "F": 12.3456, "List": ["a", "b"]});
        let cases = [
            ("{{printf \"%s=%d\" .K .N}}", "a=5"),
            ("{{printf \"%.2f%%\" .F}}", "12.35%"),
            (
                "{{printf \"%5s|%-5s|%05d\" \"ab\" \"cd\" 42}}",
                "   ab|cd   |00042",
            ),
            ("{{printf \"%q\" \"a\\\"b\"}}", "\"a\\\"b\""),
            ("{{printf \"%v\" .List}}", "[a b]"),
            ("{{printf \"%d\"}}", "%!d(MISSING)"),
            ("{{printf \"%d\" \"x\"}}", "%!d(string=x)"),
            ("{{printf \"x\" 1}}", "x%!(EXTRA int=1)"),
            ("{{printf \"%x %X %o %b\" 255 255 8 5}}", "ff FF 10 101"),
            ("{{printf \"%.3s\" \"abcdef\"}}", "abc"),
            ("{{printf \"%e\" 1234.5678}}", "1.234568e+03"),
            ("{{printf \"%g\" 0.000012}}", "1.2e-05"),
            (
                "{{printf \"%6.2f|%-7.1f|\" 3.14159 -2.0}}",
                "  3.14|-2.0   |",
            ),
            ("{{printf \"%t %v\" true .Missing}}", "true <nil>"),
            ("{{printf \"%+d %+d\" 5 -5}}", "+5 -5"),
            ("{{printf \"%c\" 65}}", "A"),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template, &data), expected, "{template}");
        }
    }

    // -- templates: control flow -------------------------------------------

    #[test]
    fn if_else_and_truth() {
        let t = "{{if .X}}T{{else}}F{{end}}";
        for x in [
            json!(""),
            json!([]),
            json!({}),
            json!(0),
            json!(0.0),
            json!(null),
            json!(false),
        ] {
            assert_eq!(render(t, &json!({"X": x})), "F", "{x}");
        }
        for x in [
            json!("x"),
            json!([0]),
            json!({"k": 0}),
            json!(1),
            json!(-1),
            json!(0.5),
            json!(true),
        ] {
            assert_eq!(render(t, &json!({"X": x})), "T", "{x}");
        }
        assert_eq!(render(t, &json!({})), "F");
        let chain = "{{if eq .S \"a\"}}A{{else if eq .S \"b\"}}B{{else}}C{{end}}";
        assert_eq!(render(chain, &json!({"S": "a"})), "A");
        assert_eq!(render(chain, &json!({"S": "b"})), "B");
        assert_eq!(render(chain, &json!({"S": "c"})), "C");
        assert_eq!(render("{{if .A}}yes{{end}}", &json!({"A": false})), "");
    }

    #[test]
    fn range_forms() {
        let data = sample();
        assert_eq!(render("{{range .List}}[{{.}}]{{end}}", &data), "[a][b]");
        assert_eq!(render("{{range $e := .List}}{{$e}}{{end}}", &data), "ab");
        assert_eq!(
            render("{{range $i, $e := .List}}{{$i}}={{$e}};{{end}}", &data),
            "0=a;1=b;"
        );
        assert_eq!(
            render("{{range $k, $v := .Labels}}{{$k}}={{$v}},{{end}}", &data),
            "com.example.app=web,tier=front,"
        );
        assert_eq!(render("{{range .Items}}{{.Name}},{{end}}", &data), "n0,n1,");
        assert_eq!(render("{{range .List}}{{$.Name}}{{end}}", &data), "webweb");
        assert_eq!(
            render(
                "{{range .Empty}}x{{else}}none{{end}}",
                &json!({"Empty": []})
            ),
            "none"
        );
        assert_eq!(render("{{range .Nope}}x{{else}}none{{end}}", &data), "none");
        assert_eq!(
            render(
                "{{range .N}}{{if eq . 2}}{{continue}}{{end}}{{if eq . 4}}{{break}}{{end}}{{.}}{{end}}",
                &json!({"N": [1, 2, 3, 4, 5]})
            ),
            "13"
        );
        assert_eq!(render("{{range 3}}{{.}}{{end}}", &data), "012");
        let err = exec_err("{{range .S}}x{{end}}", &data);
        assert_eq!(err.message, "range can't iterate over hi");
    }

    #[test]
    fn with_and_variables() {
        let data = sample();
        assert_eq!(
            render("{{with .State}}{{.Status}}{{end}}", &data),
            "running"
        );
        assert_eq!(render("{{with .Nope}}x{{else}}y{{end}}", &data), "y");
        assert_eq!(
            render(
                "{{with .A}}a{{else with .B}}b={{.}}{{end}}",
                &json!({"B": "bee"})
            ),
            "b=bee"
        );
        assert_eq!(
            render("{{$x := .Name}}{{$x}}-{{$x | upper}}", &data),
            "web-WEB"
        );
        assert_eq!(
            render("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", &data),
            "2"
        );
        assert_eq!(
            render("{{if $s := .State}}{{$s.Status}}{{end}}", &data),
            "running"
        );
        assert_eq!(render("{{$}}", &json!({"a": 1})), "map[a:1]");
        assert_eq!(
            parse_err("{{if true}}{{$y := 1}}{{end}}{{$y}}").message,
            "undefined variable \"$y\""
        );
    }

    #[test]
    fn pipelines_parentheses_and_trim_markers() {
        let data = sample();
        assert_eq!(render("{{.Name | upper}}", &data), "WEB");
        assert_eq!(
            render("{{.State | json}}", &data),
            "{\"Status\":\"running\"}"
        );
        assert_eq!(render("{{.List | len}}", &data), "2");
        assert_eq!(render("{{\"x\" | printf \"%s-%s\" \"y\"}}", &data), "y-x");
        assert_eq!(render("{{(index .Items 0).Name}}", &data), "n0");
        assert_eq!(render("{{len (index .Labels \"tier\")}}", &data), "5");
        assert_eq!(render("a  {{- .S -}}  b", &data), "ahib");
        assert_eq!(render("{{-3}}", &data), "-3");
        assert_eq!(render("{{ 3 -}} \n x", &data), "3x");
        assert_eq!(render("x {{- /* comment */ -}} y", &data), "xy");
        assert_eq!(render("a{{/* c */}}b", &data), "ab");
        assert_eq!(render("{{\n  .Name\n}}", &data), "web");
    }

    #[test]
    fn logic_and_comparisons() {
        let data = json!({"A": true, "B": false, "S": "hi", "List": [1]});
        assert_eq!(render("{{if and .A (not .B)}}yes{{end}}", &data), "yes");
        assert_eq!(render("{{or .Missing \"default\"}}", &data), "default");
        assert_eq!(
            render("{{and 1 0 2}} {{or 0 \"\" 3}} {{and 1 2}}", &data),
            "0 3 2"
        );
        assert_eq!(
            render(
                "{{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 2}}",
                &data
            ),
            "true true true false"
        );
        assert_eq!(
            render(
                "{{eq .S \"x\" \"hi\"}} {{ne 1 2}} {{eq .Missing \"x\"}}",
                &data
            ),
            "true true false"
        );
        assert_eq!(
            exec_err("{{eq .List \"x\"}}", &data).message,
            "error calling eq: incompatible types for comparison"
        );
        assert_eq!(
            exec_err("{{lt true false}}", &data).message,
            "error calling lt: invalid type for comparison"
        );
    }

    // -- templates: errors --------------------------------------------------

    #[test]
    fn parse_errors() {
        let cases = [
            ("{{.Name", 1, "unclosed action"),
            ("{{foo .X}}", 1, "function \"foo\" not defined"),
            ("{{if .X}}", 1, "unexpected EOF"),
            ("{{end}}", 1, "unexpected {{end}}"),
            ("{{else}}", 1, "unexpected {{else}}"),
            ("{{$x}}", 1, "undefined variable \"$x\""),
            ("{{\"unterminated}}", 1, "unterminated quoted string"),
            ("{{.A}}\n{{.B #}}", 2, "unexpected \"#\" in operand"),
            (
                "{{.A}}{{.B \u{1}}}",
                1,
                "unrecognized character in action: U+0001",
            ),
            ("{{)}}", 1, "unexpected \")\" in command"),
            ("{{a:b}}", 1, "function \"a\" not defined"),
            ("{{break}}", 1, "{{break}} outside {{range}}"),
            ("{{(.A}}", 1, "unclosed left paren"),
            (
                "{{.A | \"x\"}}",
                1,
                "non executable command in pipeline stage 2",
            ),
            ("{{}}", 1, "missing value for command"),
            ("{{if}}{{end}}", 1, "missing value for if"),
            ("{{template \"x\"}}", 1, "{{template}} is not supported"),
            (
                "{{if .A}}{{else}}{{else}}{{end}}",
                1,
                "expected end; found {{else}}",
            ),
            ("{{/* never closed", 1, "unclosed comment"),
            ("{{3x}}", 1, "bad number syntax: \"3x\""),
            ("{{.A\"x\"}}", 1, "bad character U+0022 '\"'"),
            ("{{\"a\"\"b\"}}", 1, "unexpected \"\\\"b\\\"\" in operand"),
        ];
        for (template, line, message) in cases {
            let err = parse_err(template);
            assert_eq!(err.phase, TemplatePhase::Parse, "{template}");
            assert_eq!(
                (err.line, err.message.as_str()),
                (line, message),
                "{template}"
            );
        }
        assert_eq!(
            parse_err("{{foo .X}}").to_string(),
            "template parsing error: template: :1: function \"foo\" not defined"
        );
    }

    #[test]
    fn exec_errors() {
        let data = sample();
        let err = Template::parse("{{.Nope}}")
            .unwrap()
            .missing_key_error()
            .render(&json!({}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template parsing error: template: :1:2: executing \"\" at <.Nope>: map has no entry for key \"Nope\""
        );
        let err = exec_err("{{.Name.First}}", &data);
        assert_eq!(err.message, "can't evaluate field First in type string");
        // Go reports a field chain at its second element.
        assert_eq!(
            (err.line, err.col, err.context.as_str()),
            (1, 7, ".Name.First")
        );
        let err = exec_err("a\n  {{.Name.X}}", &data);
        assert_eq!((err.line, err.col), (2, 9));
        assert_eq!(
            exec_err("{{upper .N}}", &data).message,
            "wrong type for value; expected string; got int"
        );
        assert_eq!(
            exec_err("{{upper .Nope}}", &data).message,
            "invalid value; expected string"
        );
        assert_eq!(
            exec_err("{{.S 1}}", &data).message,
            "S is not a method but has arguments"
        );
        assert_eq!(
            exec_err("{{len 3}}", &data).message,
            "error calling len: len of type int"
        );
        assert_eq!(
            exec_err("{{index .List 5}}", &data).message,
            "error calling index: index out of range: 5"
        );
        assert_eq!(exec_err("{{nil}}", &data).message, "nil is not a command");
        assert_eq!(
            exec_err("{{. 1}}", &data).message,
            "can't give argument to non-function ."
        );
        assert_eq!(
            exec_err("{{upper .S.B.C.D.E.F.G.H}}", &data).context,
            ".S.B.C.D.E.F.G.H"
        );
        // Errors returned by a function point at the whole command, cut to 20 characters.
        let err = exec_err("{{index .List 500000000000}}", &data);
        assert_eq!(err.context, "index .List 50000000...");
        assert_eq!(err.col, 2);
        // Type errors point at the argument.
        let err = exec_err("{{upper .N}}", &data);
        assert_eq!((err.col, err.context.as_str()), (8, ".N"));
    }

    #[test]
    fn nesting_is_limited() {
        let deep = |n: usize| format!("{}x{}", "{{if true}}".repeat(n), "{{end}}".repeat(n));
        assert_eq!(render(&deep(MAX_NESTING), &json!({})), "x");
        assert_eq!(
            parse_err(&deep(MAX_NESTING + 1)).message,
            "template nested too deeply"
        );
        let parens = format!("{{{{{}1{}}}}}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(parse_err(&parens).message, "template nested too deeply");
    }

    // -- inspect ------------------------------------------------------------

    #[test]
    fn inspect_output() {
        assert_eq!(inspect_json(&[]), "[]\n");
        let value = json!({
            "Args": [], "Config": {}, "Env": ["A=1", "B=<2>&"], "Id": "abc",
            "Null": null, "Ratio": 0.5, "Size": 0,
        });
        assert_eq!(
            inspect_json(std::slice::from_ref(&value)),
            "[\n    {\n        \"Args\": [],\n        \"Config\": {},\n        \"Env\": [\n            \"A=1\",\n            \"B=\\u003c2\\u003e\\u0026\"\n        ],\n        \"Id\": \"abc\",\n        \"Null\": null,\n        \"Ratio\": 0.5,\n        \"Size\": 0\n    }\n]\n"
        );
        assert_eq!(
            inspect_json_compact(&[value, json!(1)]),
            "[{\"Args\":[],\"Config\":{},\"Env\":[\"A=1\",\"B=\\u003c2\\u003e\\u0026\"],\"Id\":\"abc\",\"Null\":null,\"Ratio\":0.5,\"Size\":0},1]\n"
        );
        assert_eq!(inspect_json_compact(&[]), "[]\n");
    }

    // -- units --------------------------------------------------------------

    #[test]
    fn human_duration_thresholds() {
        let day = 24 * 3600;
        let (week, month, year) = (7 * day, 30 * day, 365 * day);
        let s = TimeDelta::seconds;
        let cases = [
            (TimeDelta::milliseconds(450), "Less than a second"),
            (TimeDelta::milliseconds(999), "Less than a second"),
            (s(-5), "Less than a second"),
            (s(1), "1 second"),
            (s(45), "45 seconds"),
            (s(59), "59 seconds"),
            (s(60), "About a minute"),
            (s(90), "About a minute"),
            (s(119), "About a minute"),
            (s(120), "2 minutes"),
            (s(35 * 60 + 40), "35 minutes"),
            (s(46 * 60), "46 minutes"),
            (s(59 * 60 + 59), "59 minutes"),
            (s(3600), "About an hour"),
            (s(3600 + 29 * 60), "About an hour"),
            (s(3600 + 31 * 60), "2 hours"),
            (s(3 * 3600 + 29 * 60), "3 hours"),
            (s(3 * 3600 + 31 * 60), "4 hours"),
            (s(24 * 3600), "24 hours"),
            (s(36 * 3600), "36 hours"),
            (s(47 * 3600), "47 hours"),
            (s(47 * 3600 + 29 * 60), "47 hours"),
            (s(47 * 3600 + 31 * 60), "2 days"),
            (s(48 * 3600), "2 days"),
            (s(7 * day), "7 days"),
            (s(13 * day), "13 days"),
            (s(13 * day + 5 * 3600), "13 days"),
            (s(14 * day), "2 weeks"),
            (s(2 * week + 4 * day), "2 weeks"),
            (s(4 * week + 3 * day), "4 weeks"),
            (s(month), "4 weeks"),
            (s(month + 2 * week), "6 weeks"),
            (s(59 * day), "8 weeks"),
            (s(60 * day), "2 months"),
            (s(3 * month + week), "3 months"),
            (s(13 * month), "13 months"),
            (s(24 * month), "24 months"),
            (s(729 * day), "24 months"),
            (s(730 * day), "2 years"),
            (s(24 * month + 2 * week), "2 years"),
            (s(3 * year + 2 * month), "3 years"),
        ];
        for (d, expected) in cases {
            assert_eq!(human_duration(d), expected, "{d:?}");
        }
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(ago(now - s(5), now), "5 seconds ago");
        assert_eq!(ago(now - s(2 * 3600), now), "2 hours ago");
    }

    #[test]
    fn sizes() {
        let cases = [
            (0.0, "0B"),
            (999.0, "999B"),
            (1000.0, "1kB"),
            (1024.0, "1.02kB"),
            (1240.0, "1.24kB"),
            (4_260_000.0, "4.26MB"),
            (5_000_000.0, "5MB"),
            (77_800_000.0, "77.8MB"),
            (123_456_789.0, "123MB"),
            (999_999.0, "1e+03kB"),
            (1.5e9, "1.5GB"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(human_size(bytes), expected, "{bytes}");
        }
        let (mb, gb, tb, pb) = (1e6, 1e9, 1e12, 1e15);
        assert_eq!(human_size_with_precision(1000.0, 4), "1kB");
        assert_eq!(human_size_with_precision(1024.0, 4), "1.024kB");
        assert_eq!(human_size_with_precision(1_048_576.0, 4), "1.049MB");
        assert_eq!(human_size_with_precision(2.0 * mb, 4), "2MB");
        assert_eq!(human_size_with_precision(3.42 * gb, 4), "3.42GB");
        assert_eq!(human_size_with_precision(5.372 * tb, 4), "5.372TB");
        assert_eq!(human_size_with_precision(2.22 * pb, 4), "2.22PB");
        assert_eq!(human_size_with_precision(1e13 * pb, 4), "1e+04YB");
        let (kib, mib, gib, tib, pib) = (
            1024.0,
            1_048_576.0,
            1_073_741_824.0,
            1_099_511_627_776.0,
            1_125_899_906_842_624.0,
        );
        assert_eq!(bytes_size(0.0), "0B");
        assert_eq!(bytes_size(512.0), "512B");
        assert_eq!(bytes_size(kib), "1KiB");
        assert_eq!(bytes_size(mib), "1MiB");
        assert_eq!(bytes_size(2.0 * mib), "2MiB");
        assert_eq!(bytes_size(2_048_000.0), "1.953MiB");
        assert_eq!(bytes_size(3.42 * gib), "3.42GiB");
        assert_eq!(bytes_size(5.372 * tib), "5.372TiB");
        assert_eq!(bytes_size(2.22 * pib), "2.22PiB");
        assert_eq!(
            bytes_size(kib * kib * kib * kib * kib * pib),
            "1.049e+06YiB"
        );
    }

    #[test]
    fn parse_bytes_like_ram_in_bytes() {
        let (k, m, g, t, p) = (1u64 << 10, 1u64 << 20, 1u64 << 30, 1u64 << 40, 1u64 << 50);
        let ok = [
            ("32", 32),
            ("32b", 32),
            ("32B", 32),
            ("32k", 32 * k),
            ("32K", 32 * k),
            ("32kb", 32 * k),
            ("32Kb", 32 * k),
            ("32Kib", 32 * k),
            ("32KIB", 32 * k),
            ("32Mb", 32 * m),
            ("32m", 32 * m),
            ("32 MiB", 32 * m),
            ("32Gb", 32 * g),
            ("32Tb", 32 * t),
            ("32Pb", 32 * p),
            ("32PB", 32 * p),
            ("32P", 32 * p),
            ("512k", 512 * k),
            ("1g", g),
            ("1.5g", 3 * g / 2),
            ("1024", 1024),
            ("1e3", 1000),
            ("32.3", 32),
            ("32.3 mb", (32.3f64 * 1_048_576.0) as u64),
            ("0.3MB", 314_572),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_bytes(input), Ok(expected), "{input}");
        }
        let invalid_size = |s: &str| SizeError::Size {
            input: s.to_owned(),
        };
        assert_eq!(parse_bytes(""), Err(invalid_size("")));
        assert_eq!(parse_bytes("hello"), Err(invalid_size("hello")));
        assert_eq!(parse_bytes("-32"), Err(invalid_size("-32")));
        assert_eq!(
            parse_bytes("99999999999p"),
            Err(invalid_size("99999999999p"))
        );
        assert_eq!(
            parse_bytes(" 32 "),
            Err(SizeError::Number {
                number: " 32".to_owned()
            })
        );
        assert_eq!(
            parse_bytes("32m b"),
            Err(SizeError::Number {
                number: "32m".to_owned()
            })
        );
        assert_eq!(
            parse_bytes("32bm"),
            Err(SizeError::Suffix {
                suffix: "bm".to_owned()
            })
        );
        assert_eq!(
            parse_bytes("32x").unwrap_err().to_string(),
            "invalid suffix: 'x'"
        );
        assert_eq!(
            parse_bytes("hello").unwrap_err().to_string(),
            "invalid size: 'hello'"
        );
        assert_eq!(
            parse_bytes("32m b").unwrap_err().to_string(),
            "strconv.ParseFloat: parsing \"32m\": invalid syntax"
        );
    }

    #[test]
    fn short_ids() {
        assert_eq!(
            short_id("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            "0123456789ab"
        );
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn container_status_strings() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let ago = |s: i64| Some(now - TimeDelta::seconds(s));
        let running = ContainerStatusInput {
            running: true,
            started_at: ago(5),
            ..Default::default()
        };
        assert_eq!(container_status(&running, now), "Up 5 seconds");
        let minute = ContainerStatusInput {
            started_at: ago(61),
            ..running.clone()
        };
        assert_eq!(container_status(&minute, now), "Up About a minute");
        let paused = ContainerStatusInput {
            paused: true,
            started_at: ago(3 * 3600),
            ..running.clone()
        };
        assert_eq!(container_status(&paused, now), "Up 3 hours (Paused)");
        let starting = ContainerStatusInput {
            started_at: ago(120),
            health: Some("starting".to_owned()),
            ..running.clone()
        };
        assert_eq!(
            container_status(&starting, now),
            "Up 2 minutes (health: starting)"
        );
        let healthy = ContainerStatusInput {
            health: Some("healthy".to_owned()),
            ..starting.clone()
        };
        assert_eq!(container_status(&healthy, now), "Up 2 minutes (healthy)");
        let restarting = ContainerStatusInput {
            restarting: true,
            exit_code: 1,
            finished_at: ago(3),
            ..running.clone()
        };
        assert_eq!(
            container_status(&restarting, now),
            "Restarting (1) 3 seconds ago"
        );
        let exited = ContainerStatusInput {
            exit_code: 137,
            started_at: ago(600),
            finished_at: ago(120),
            ..Default::default()
        };
        assert_eq!(container_status(&exited, now), "Exited (137) 2 minutes ago");
        assert_eq!(
            container_status(&ContainerStatusInput::default(), now),
            "Created"
        );
        let dead = ContainerStatusInput {
            dead: true,
            ..exited.clone()
        };
        assert_eq!(container_status(&dead, now), "Dead");
        let removing = ContainerStatusInput {
            removal_in_progress: true,
            ..exited.clone()
        };
        assert_eq!(container_status(&removing, now), "Removal In Progress");
        let started_only = ContainerStatusInput {
            started_at: ago(10),
            ..Default::default()
        };
        assert_eq!(container_status(&started_only, now), "");
    }

    #[test]
    fn command_column() {
        let args = |a: &[&str]| strings(a);
        assert_eq!(
            quote_command("sh", &args(&["-c", "echo hi"]), false),
            "\"sh -c 'echo hi'\""
        );
        assert_eq!(quote_command("nginx", &[], true), "\"nginx\"");
        assert_eq!(
            quote_command(
                "/docker-entrypoint.sh",
                &args(&["nginx", "-g", "daemon off;"]),
                true
            ),
            "\"/docker-entrypoint.…\""
        );
        assert_eq!(
            quote_command(
                "/docker-entrypoint.sh",
                &args(&["nginx", "-g", "daemon off;"]),
                false
            ),
            "\"/docker-entrypoint.sh nginx -g 'daemon off;'\""
        );
        assert_eq!(
            quote_command("echo", &args(&["a\tb", "\"q\""]), false),
            "\"echo a\\tb \\\"q\\\"\""
        );
        assert_eq!(go_quote("a\u{7}é…\u{200b}\u{1}"), "\"a\\aé…\\u200b\\x01\"");
    }
}
