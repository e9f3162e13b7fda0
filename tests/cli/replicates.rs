//! Replicates and random sweeps through the real binary: seeds, incremental N, and the
//! gathering ops' summaries checked against values computed here from the members' metrics.

use serde_json::Value;

use crate::Project;

const DATA: &str = r#"
stages:
  map:
    op: data.synthetic_map
    params: {seed: 0, n_train: 1500, n_validation: 300, n_test: 300}
  europe:
    op: data.csv
    inputs: {csv: map}
"#;

fn pipeline(replicates: usize) -> String {
    format!(
        "{DATA}  g:\n    op: train.mlp\n    inputs: {{data: europe}}\n    \
         params: {{depth: 1, width: 8, epochs: 2, batch_size: 128, lr: 0.01, seed: 5}}\n    \
         sweep: {{width: [4, 8]}}\n    replicates: {replicates}\n  \
         table:\n    op: table\n    inputs: {{runs: g}}\n    params: {{columns: [width, validation_acc, test_acc]}}\n  \
         best:\n    op: select\n    inputs: {{runs: g}}\n  \
         curves:\n    op: plot.curves\n    inputs: {{runs: g}}\n    params: {{metrics: [validation_acc]}}\n  \
         vs:\n    op: plot.vs_param\n    inputs: {{runs: g}}\n    params: {{param: width}}\n"
    )
}

/// `pipeline show --json` of a stage: one object per member.
fn members(p: &Project, stage: &str) -> Vec<Value> {
    let out = p.run(&["show", "p.yaml", stage, "--json"]).ok().stdout;
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Members of stage `base` in the `ran` lines of a run's output, sorted.
fn ran_members(stdout: &str, base: &str) -> Vec<String> {
    let prefix = format!("{base}[");
    let mut names: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split("] ran ").nth(1))
        .filter(|rest| rest.starts_with(&prefix))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn trained(stdout: &str) -> Vec<String> {
    ran_members(stdout, "g")
}

fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[test]
fn replicates_differ_in_seed_are_summarised_and_grow_incrementally() {
    let p = Project::new();
    p.write("p.yaml", &pipeline(3));
    let run = p.run(&["run", "p.yaml", "--jobs", "2"]).ok();
    assert_eq!(
        trained(&run.stdout),
        [
            "g[width=4,rep=1]",
            "g[width=4,rep=2]",
            "g[width=4,rep=3]",
            "g[width=8,rep=1]",
            "g[width=8,rep=2]",
            "g[width=8,rep=3]"
        ]
    );
    let g = members(&p, "g");
    let seed = |name: &str| {
        g.iter().find(|m| m["name"] == name).unwrap()["params"]["seed"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(
        seed("g[width=4,rep=1]"),
        5,
        "replicate 1 keeps the stage's seed"
    );
    let (s2, s3) = (seed("g[width=4,rep=2]"), seed("g[width=4,rep=3]"));
    assert!(s2 != 5 && s3 != 5 && s2 != s3);
    assert_eq!(
        s2,
        seed("g[width=8,rep=2]"),
        "replicate r shares its seed across configurations"
    );

    // The table: one row per width, mean ± sd over the three replicates, computed here again.
    let acc = |width: u32| -> Vec<f64> {
        g.iter()
            .filter(|m| m["params"]["width"] == width)
            .map(|m| m["metrics"]["validation_acc"].as_f64().unwrap())
            .collect()
    };
    let csv = p.read("results/table/table.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("width,validation_acc,validation_acc_sd,test_acc,test_acc_sd,n")
    );
    for (line, width) in lines.zip([4, 8]) {
        let cells: Vec<&str> = line.split(',').collect();
        let (mean, sd) = mean_sd(&acc(width));
        assert_eq!(cells[0], width.to_string());
        assert!(
            (cells[1].parse::<f64>().unwrap() - mean).abs() < 1e-9,
            "{line} vs {mean}"
        );
        assert!(
            (cells[2].parse::<f64>().unwrap() - sd).abs() < 1e-9,
            "{line} vs {sd}"
        );
        assert_eq!(cells[5], "3");
    }
    let md = p.read("results/table/table.md");
    assert!(md.contains("| N |") && md.contains(" ± "), "{md}");
    let summary: Value = serde_json::from_str(&p.read("results/table/summary.json")).unwrap();
    let reading = summary["reading"].as_str().unwrap();
    assert!(
        reading.contains("N=3") && reading.contains("runner-up"),
        "{reading}"
    );
    assert!(
        summary["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|kv| kv[0] == "replicates" && kv[1] == "3"),
        "{summary}"
    );

    // Select ranks configurations by the mean and hands on the median replicate.
    let best = members(&p, "best");
    let selected_dir = best[0]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.as_str().filter(|f| f.ends_with("selected.json")))
        .unwrap()
        .to_string();
    let selected: Value =
        serde_json::from_str(&std::fs::read_to_string(selected_dir).unwrap()).unwrap();
    let (m4, m8) = (mean_sd(&acc(4)).0, mean_sd(&acc(8)).0);
    let (winner, wacc) = if m8 >= m4 { (8, acc(8)) } else { (4, acc(4)) };
    assert_eq!(selected["configuration"], format!("g[width={winner}]"));
    assert_eq!(selected["n"], 3);
    let mut sorted = wacc.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        selected["value"].as_f64().unwrap(),
        sorted[1],
        "the median replicate"
    );

    for plot in ["curves", "vs"] {
        assert!(p.path().join(format!("results/{plot}/plot.png")).exists());
        let s: Value =
            serde_json::from_str(&p.read(&format!("results/{plot}/summary.json"))).unwrap();
        assert!(s["reading"].as_str().unwrap().contains(" ± "), "{s}");
    }

    // Raising N runs only the new replicates; lowering it trains nothing.
    p.write("p.yaml", &pipeline(5));
    let more = p.run(&["run", "p.yaml", "--jobs", "2"]).ok();
    assert_eq!(
        trained(&more.stdout),
        [
            "g[width=4,rep=4]",
            "g[width=4,rep=5]",
            "g[width=8,rep=4]",
            "g[width=8,rep=5]"
        ]
    );
    assert!(p.read("results/table/table.csv").ends_with(",5\n"));
    p.write("p.yaml", &pipeline(2));
    let fewer = p.run(&["run", "p.yaml"]).ok();
    assert!(trained(&fewer.stdout).is_empty(), "{}", fewer.stdout);
    assert!(p.read("results/table/table.csv").ends_with(",2\n"));
}

fn random_pipeline(n: usize) -> String {
    format!(
        "{DATA}  r:\n    op: train.mlp\n    inputs: {{data: europe}}\n    \
         params: {{depth: 1, epochs: 1, batch_size: 256}}\n    \
         sweep: {{random: {{n: {n}, seed: 3, params: {{lr: {{log_uniform: [1.0e-4, 0.1]}}, width: {{choice: [4, 8, 16]}}}}}}}}\n"
    )
}

#[test]
fn random_sweeps_are_deterministic_and_extend_by_prefix() {
    let p = Project::new();
    p.write("p.yaml", &random_pipeline(3));
    let first = p.run(&["run", "p.yaml"]).ok();
    let names = |stdout: &str| ran_members(stdout, "r");
    let three = names(&first.stdout);
    assert_eq!(three.len(), 3, "{}", first.stdout);
    for name in &three {
        // Readable: `r[lr=0.00316,width=8]`, three significant digits.
        let lr = name.split("lr=").nth(1).unwrap().split(',').next().unwrap();
        assert!(
            lr.trim_start_matches("0.").trim_start_matches('0').len() <= 3 || lr.contains('e'),
            "{name}"
        );
    }
    // The same points from a fresh cache.
    let q = Project::new();
    q.write("p.yaml", &random_pipeline(3));
    let again = names(&q.run(&["run", "p.yaml"]).ok().stdout);
    assert_eq!(again, three);
    // Five points: the first three are the same members, cached; two more train.
    p.write("p.yaml", &random_pipeline(5));
    let grown = p.run(&["run", "p.yaml"]).ok();
    let ran = names(&grown.stdout);
    assert_eq!(ran.len(), 2, "{}", grown.stdout);
    assert!(ran.iter().all(|n| !three.contains(n)));
}
