//! Contact fields: a bot's own facts about a user (`licenseplate`, `location`, a CRM id), kept
//! with the user and shown in every event's user object. Set through `PATCH /v1/users/{id}`
//! or by a field message (`{"type": "field", …}`, Web1on1's `.licenseplate XX-99-WZ`); this
//! module holds their limits and the one way both are checked and applied.

use std::collections::BTreeMap;

use crate::content::FieldError;

/// A user's fields: name → value.
pub type Fields = BTreeMap<String, String>;

/// Changes to a user's fields: a value sets the field, `None` removes it.
pub type FieldChanges = BTreeMap<String, Option<String>>;

/// Fields a user may carry at most.
pub const MAX_FIELDS: usize = 64;

/// Longest field name, in bytes (names are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Longest field value, in characters.
pub const MAX_VALUE_CHARS: usize = 1024;

/// Checks a field name: 1 to [`MAX_NAME_LEN`] characters of `A-Z`, `a-z`, `0-9`, `_` and `-`,
/// starting with a letter (so `.licenseplate XX` and a template's `{{contact.fields.x}}` can
/// name it).
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= MAX_NAME_LEN;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a field name is 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '_' and '-', \
             starting with a letter"
        ))
    }
}

/// Checks a field value: at most [`MAX_VALUE_CHARS`] characters, no control characters but
/// line breaks and tabs.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(format!("must be at most {MAX_VALUE_CHARS} characters"));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

/// Checks `changes` (each name, each value; the error names the field as `fields.<name>`).
pub fn check_changes(changes: &FieldChanges) -> Result<(), FieldError> {
    for (name, value) in changes {
        check_name(name).map_err(|m| FieldError::new(format!("fields.{name}"), m))?;
        if let Some(v) = value {
            check_value(v).map_err(|m| FieldError::new(format!("fields.{name}"), m))?;
        }
    }
    Ok(())
}

/// `fields` with `changes` applied; refused when the result would carry more than
/// [`MAX_FIELDS`] fields (the fields are then unchanged).
pub fn apply(fields: &Fields, changes: &FieldChanges) -> Result<Fields, FieldError> {
    check_changes(changes)?;
    let mut out = fields.clone();
    for (name, value) in changes {
        match value {
            Some(v) => {
                out.insert(name.clone(), v.clone());
            }
            None => {
                out.remove(name);
            }
        }
    }
    if out.len() > MAX_FIELDS {
        return Err(FieldError::new(
            "fields",
            format!(
                "a user carries at most {MAX_FIELDS} fields; this would make {} (remove some \
                 with null)",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Reads Web1on1's field message text, `.<name> <value>`: the name after the dot, the value
/// after the first run of spaces (trimmed at its end). Without a value the field is removed.
pub fn parse_dot_form(text: &str) -> Result<(String, Option<String>), String> {
    let Some(rest) = text.trim_start().strip_prefix('.') else {
        return Err("must be `.<field> <value>`, e.g. `.licenseplate XX-99-WZ`".to_owned());
    };
    let (name, value) = match rest.split_once(char::is_whitespace) {
        Some((name, value)) => (name, value.trim()),
        None => (rest.trim_end(), ""),
    };
    check_name(name)?;
    let value = (!value.is_empty()).then(|| value.to_owned());
    if let Some(v) = &value {
        check_value(v)?;
    }
    Ok((name.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_letters_digits_underscores_and_dashes_after_a_letter() {
        for good in ["licenseplate", "crm_id", "Zip-Code", "a", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1st",
            "_x",
            "has space",
            "dot.ted",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_are_bounded_and_printable() {
        assert!(check_value("").is_ok());
        assert!(check_value("line one\nline two\tend").is_ok());
        assert!(check_value(&"é".repeat(MAX_VALUE_CHARS)).is_ok());
        assert!(check_value(&"é".repeat(MAX_VALUE_CHARS + 1)).is_err());
        assert!(check_value("bell\u{7}").is_err());
    }

    #[test]
    fn the_dot_form_names_a_field_and_its_value_or_removes_it() {
        assert_eq!(
            parse_dot_form(".licenseplate XX-99-WZ"),
            Ok(("licenseplate".into(), Some("XX-99-WZ".into())))
        );
        assert_eq!(
            parse_dot_form("  .location   Main Street 1, Utrecht  "),
            Ok(("location".into(), Some("Main Street 1, Utrecht".into())))
        );
        assert_eq!(parse_dot_form(".old"), Ok(("old".into(), None)));
        assert_eq!(parse_dot_form(".old   "), Ok(("old".into(), None)));
        assert!(parse_dot_form("licenseplate XX").is_err());
        assert!(parse_dot_form(". XX").is_err());
        assert!(parse_dot_form(".9lives yes").is_err());
    }

    #[test]
    fn changes_set_and_remove_and_the_count_is_bounded() {
        let mut fields = Fields::new();
        fields.insert("old".into(), "1".into());
        let changes: FieldChanges = [
            ("licenseplate".to_owned(), Some("XX-99-WZ".to_owned())),
            ("old".to_owned(), None),
        ]
        .into();
        let out = apply(&fields, &changes).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out["licenseplate"], "XX-99-WZ");

        let full: Fields = (0..MAX_FIELDS)
            .map(|i| (format!("f{i}"), "v".into()))
            .collect();
        let one_more: FieldChanges = [("extra".to_owned(), Some("v".to_owned()))].into();
        let e = apply(&full, &one_more).unwrap_err();
        assert_eq!(e.field, "fields");
        assert!(e.message.contains("at most 64"), "{}", e.message);
        // Replacing one keeps the count: allowed.
        let replace: FieldChanges = [("f0".to_owned(), Some("w".to_owned()))].into();
        assert_eq!(apply(&full, &replace).unwrap()["f0"], "w");

        let bad: FieldChanges = [("no good".to_owned(), Some("v".to_owned()))].into();
        assert_eq!(apply(&fields, &bad).unwrap_err().field, "fields.no good");
    }
}
