//! Transaction items with their expressions, the names and values each one uses (DynamoDB refuses
//! unused ones), and the old item returned when a condition fails.

use super::{Ex, Item};
use aws_sdk_dynamodb::types::{
    ConditionCheck, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

pub(crate) fn tx_update(table: &str, key: Item, update: &str, cond: Option<&str>, ex: &Ex) -> TransactWriteItem {
    let mut exprs = vec![update];
    exprs.extend(cond);
    let (names, values) = ex.for_exprs(&exprs);
    let u = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(update)
        .set_condition_expression(cond.map(str::to_string))
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .expect("update has table, key and expression");
    TransactWriteItem::builder().update(u).build()
}

pub(crate) fn tx_put(table: &str, item: Item, cond: &str, ex: &Ex) -> TransactWriteItem {
    let (names, values) = ex.for_exprs(&[cond]);
    let p = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(cond)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .expect("put has table and item");
    TransactWriteItem::builder().put(p).build()
}

/// A put without a condition (an item the transaction owns outright: a pointer, an index row).
pub(crate) fn tx_put_always(table: &str, item: Item) -> TransactWriteItem {
    let p = Put::builder().table_name(table).set_item(Some(item)).build().expect("put has table and item");
    TransactWriteItem::builder().put(p).build()
}

pub(crate) fn tx_check(table: &str, key: Item, cond: &str, ex: &Ex) -> TransactWriteItem {
    let (names, values) = ex.for_exprs(&[cond]);
    let c = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression(cond)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .expect("condition check has table, key and condition");
    TransactWriteItem::builder().condition_check(c).build()
}

pub(crate) fn tx_delete(table: &str, key: Item, cond: &str, ex: &Ex) -> TransactWriteItem {
    let (names, values) = ex.for_exprs(&[cond]);
    let d = Delete::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression(cond)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .expect("delete has table and key");
    TransactWriteItem::builder().delete(d).build()
}
