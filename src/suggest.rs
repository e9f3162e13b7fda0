//! "Did you mean" suggestions for misspelled names.

/// The candidate closest to `name`, if one is close enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Edit distance with transpositions (`adma` → `adam` is one edit), ties broken by similarity.
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::osa_distance(name, c),
                -strsim::jaro_winkler(name, c),
                c,
            )
        })
        .filter(|(distance, _, _)| *distance <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| c)
}

/// ", did you mean `x`?" or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(
            closest("train.mpl", ["train.mlp", "shell"]),
            Some("train.mlp")
        );
        assert_eq!(closest("shel", ["train.mlp", "shell"]), Some("shell"));
        assert_eq!(closest("zzzz", ["train.mlp", "shell"]), None);
    }
}
