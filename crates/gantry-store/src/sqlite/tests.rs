use super::*;
use crate::suite::release;
#[allow(unused_imports)]
use gantry_core::Phase;

#[test]
fn state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gantry.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.insert_release(&release("2.0.0", 'd')).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.releases().unwrap().len(),
        1,
        "migrations are not re-applied, data kept"
    );
}

mod upgrade;
