DROP FUNCTION ledger_refuse(TEXT);
