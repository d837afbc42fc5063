//! The JSON line format of the log files and of `log_format = "json"`: one object per line,
//! `{"timestamp","level","event","message",…fields,"target",…span fields}`, with every string
//! escaped so that no value (a peer's above all) can end the line or reach a terminal. Also the
//! UTC calendar both the timestamps and the daily files use. Formats; never writes.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::Escape;

/// Where the time of a line comes from: the system clock, or a test's.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// How every JSON line starts; the UTC date follows (the daily files read it there).
pub(crate) const LINE_START: &[u8] = b"{\"timestamp\":\"";

/// The field that marks a signalling-message line (`event` is then `proto_message`, as in
/// Wilbur's files); the text format leaves these fields out of its lines.
pub(crate) const MESSAGE_LINE_FIELDS: [&str; 4] = ["direction", "sender", "receiver", "type"];

/// Formats one event as a JSON line. Span fields come from [`JsonFields`].
pub(crate) struct JsonFormat {
    clock: Clock,
}

impl JsonFormat {
    pub(crate) fn new(clock: Clock) -> Self {
        Self { clock }
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let kind = if meta.fields().field(MESSAGE_LINE_FIELDS[0]).is_some() {
            "proto_message"
        } else {
            "message"
        };
        write!(
            writer,
            "{{\"timestamp\":\"{}\",\"level\":\"{}\",\"event\":\"{kind}\"",
            Timestamp((self.clock)()),
            level_name(*meta.level()),
        )?;
        // The message first, then the other fields in the order they were given.
        for pass in [Pass::Message, Pass::Others] {
            let mut visitor = JsonVisitor::new(&mut writer, pass, false);
            event.record(&mut visitor);
            visitor.result?;
        }
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() {
                    if !fields.is_empty() {
                        writer.write_char(',')?;
                        writer.write_str(fields)?;
                    }
                }
            }
        }
        writer.write_str("}\n")
    }
}

/// The lowercase level names Wilbur's files use (winston's), `trace` added.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Span fields as JSON members without braces (`"id":"#3","role":"player"`), formatted once
/// when the span is created and spliced into each line of an event inside it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor::new(&mut writer, Pass::All, true);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut visitor = JsonVisitor::new(&mut writer, Pass::All, first);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Which fields a visit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Message,
    Others,
    All,
}

/// Writes each field as `,"name":value`: numbers and booleans as JSON numbers and booleans,
/// everything else as an escaped string.
struct JsonVisitor<'a, W: fmt::Write> {
    out: &'a mut W,
    pass: Pass,
    /// No comma before the next member.
    first: bool,
    result: fmt::Result,
}

impl<'a, W: fmt::Write> JsonVisitor<'a, W> {
    fn new(out: &'a mut W, pass: Pass, first: bool) -> Self {
        Self {
            out,
            pass,
            first,
            result: Ok(()),
        }
    }

    /// Writes the member's name, or returns false if this pass skips it.
    fn name(&mut self, field: &Field) -> bool {
        let is_message = field.name() == "message";
        let wanted = match self.pass {
            Pass::Message => is_message,
            Pass::Others => !is_message,
            Pass::All => true,
        };
        if !wanted || self.result.is_err() {
            return false;
        }
        let comma = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = self
            .out
            .write_str(comma)
            .and_then(|()| write_json_str(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'));
        self.result.is_ok()
    }

    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        if self.name(field) {
            self.result = write!(self.out, "{value}");
        }
    }
}

impl<W: fmt::Write> Visit for JsonVisitor<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.name(field) {
            self.result = write_json_str(self.out, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.name(field) {
            self.result = write_json_display(self.out, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.name(field) {
            // A message (`format_args!`) debug-prints as its text; `%x` fields as their Display.
            self.result = self
                .out
                .write_char('"')
                .and_then(|()| write!(JsonStr(self.out), "{value:?}"))
                .and_then(|()| self.out.write_char('"'));
        }
    }
}

/// `s` as a JSON string, quoted and escaped.
pub(crate) fn write_json_str(out: &mut (impl fmt::Write + ?Sized), s: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonStr(out).write_str(s)?;
    out.write_char('"')
}

fn write_json_display(out: &mut impl fmt::Write, value: impl fmt::Display) -> fmt::Result {
    out.write_char('"')?;
    write!(JsonStr(out), "{value}")?;
    out.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string: `"` and `\`, and every
/// character the text format escapes (controls, line and paragraph separators, bidi marks),
/// so a JSON line is one line and shows nothing a peer chose as a terminal control.
struct JsonStr<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for JsonStr<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Runs that need no escape are written whole: verbose message lines can be a MiB.
        let mut run = 0;
        for (at, c) in s.char_indices() {
            let short = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                c => match Escape::of(c, false) {
                    Escape::Raw(_) => continue,
                    // `\n`, `\r`, `\t`: the same in JSON.
                    Escape::Short(short) => Some(short),
                    Escape::Unicode(_) => None,
                },
            };
            self.0.write_str(&s[run..at])?;
            match short {
                Some(short) => self.0.write_str(short)?,
                // Every character escaped this way is in the Basic Multilingual Plane.
                None => write!(self.0, "\\u{:04x}", u32::from(c))?,
            }
            run = at + c.len_utf8();
        }
        self.0.write_str(&s[run..])
    }
}

// ---- the UTC calendar ----
//
// By hand rather than with `time` or `chrono`: two fixed formats and a date comparison are all
// the log needs, and the conversion is Howard Hinnant's well-known `days_from_civil` /
// `civil_from_days` (howardhinnant.github.io/date_algorithms.html), tested below against
// known dates.

const SECONDS_PER_DAY: u64 = 86_400;

/// A UTC calendar day, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date(i64);

impl Date {
    /// The UTC day of `time` (1970-01-01 for any time before it).
    pub(crate) fn of(time: SystemTime) -> Self {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        #[allow(clippy::cast_possible_wrap)] // u64 seconds / 86400 is far below i64::MAX.
        Self((secs / SECONDS_PER_DAY) as i64)
    }

    /// `YYYY-MM-DD`, strictly: four-digit year, a month and a day that exist.
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *text else {
            return None;
        };
        let digits = |ds: &[u8]| {
            ds.iter().try_fold(0i64, |n, d| {
                d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
            })
        };
        let (year, month, day) = (
            digits(&[y0, y1, y2, y3])?,
            digits(&[m0, m1])?,
            digits(&[d0, d1])?,
        );
        if !(1..=12).contains(&month) || day < 1 {
            return None;
        }
        let date = Self(days_from_civil(year, month, day));
        // 2026-02-31 would land on March 3rd: a date that does not exist is no date.
        (date.civil() == (year, month, day)).then_some(date)
    }

    /// The first instant of the day.
    #[cfg(test)]
    pub(crate) fn start(self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(self.0.unsigned_abs() * SECONDS_PER_DAY)
    }

    /// `days` days earlier.
    pub(crate) fn minus_days(self, days: u32) -> Self {
        Self(self.0 - i64::from(days))
    }

    fn civil(self) -> (i64, i64, i64) {
        civil_from_days(self.0)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// A time as RFC 3339 in UTC with milliseconds: `2026-11-30T23:59:59.999Z`.
pub(crate) struct Timestamp(pub(crate) SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let in_day = since.as_secs() % SECONDS_PER_DAY;
        write!(
            f,
            "{}T{:02}:{:02}:{:02}.{:03}Z",
            Date::of(self.0),
            in_day / 3600,
            in_day / 60 % 60,
            in_day % 60,
            since.subsec_millis()
        )
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
