//! The demo warehouse `lakegate serve` writes on first start: `sales.orders` and `hr.employees` as CSV files
//! under `<data_dir>/warehouse/`, deterministic so that tests and the documentation can name exact rows.

use std::fmt::Write as _;
use std::path::Path;

const CUSTOMERS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Vandelay",
];

/// The demo orders: 24 rows, half EU and half US, with 16-digit card numbers.
pub fn orders_csv() -> String {
    let mut out = String::from("order_id,customer,region,amount,card_number\n");
    for i in 1u64..=24 {
        let customer = CUSTOMERS.get((i as usize - 1) % CUSTOMERS.len()).copied().unwrap_or("Acme");
        let region = if i % 2 == 1 { "EU" } else { "US" };
        let amount_cents = 1000 + (i * 7919) % 90_000;
        let card = 4_000_000_000_000_000u64 + i * 1_234_567_891;
        let _ = writeln!(out, "{i},{customer},{region},{}.{:02},{card}", amount_cents / 100, amount_cents % 100);
    }
    out
}

/// The demo employees: 8 rows with salaries and SSNs.
pub fn employees_csv() -> String {
    let people = [
        ("Ada", "engineering"),
        ("Brian", "engineering"),
        ("Chen", "sales"),
        ("Dana", "sales"),
        ("Eve", "hr"),
        ("Farid", "finance"),
        ("Grace", "engineering"),
        ("Hugo", "finance"),
    ];
    let mut out = String::from("id,name,department,salary,ssn\n");
    for (i, (name, dept)) in (1u64..).zip(people) {
        let salary = 50_000 + i * 6_250;
        let _ = writeln!(out, "{i},{name},{dept},{salary}.00,{:03}-{:02}-{:04}", 100 + i, 10 + i, 1000 + i * 111);
    }
    out
}

/// Writes the demo tables into `warehouse` unless their directories exist (never overwrites data).
pub fn seed(warehouse: &Path) -> std::io::Result<()> {
    for (db, table, csv) in [("sales", "orders", orders_csv()), ("hr", "employees", employees_csv())] {
        let dir = warehouse.join(db).join(table);
        if dir.exists() {
            continue;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("part-0.csv"), csv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_orders_cover_both_regions_with_sixteen_digit_cards() {
        let csv = orders_csv();
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 24);
        assert_eq!(rows.iter().filter(|r| r.contains(",EU,")).count(), 12);
        for r in rows {
            let card = r.rsplit(',').next().unwrap_or_default();
            assert_eq!(card.len(), 16, "{r}");
        }
    }
}
