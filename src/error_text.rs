//! One way to show an error with its causes: `outer: inner: innermost`,
//! for logs, the status page and the detail kept beside client errors.

use std::error::Error;

/// `error` followed by each of its sources, joined by `": "`.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error_in_order() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&error), "outer: inner");
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }
}
