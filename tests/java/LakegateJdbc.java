// A small pgJDBC client for the SQL gateway tests: runs one query (plain statement, then the same as a
// server-prepared statement) or lists DatabaseMetaData tables and columns, printing tab-separated rows.
//
// usage: java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> query <sql>
//        java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> prepared <sql> <int-param>
//        java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> meta
//        java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> browse
//        java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> script <file>
// "browse" walks DatabaseMetaData as a SQL editor does on connect and when a user opens schemas and tables,
// printing one line per row ("<METHOD>\t<values>") and "FAILED\t<method>\t<SQLSTATE>\t<message>" for a
// method that fails; it goes on with the next method, and exits 4 if any failed.
// "script" replays a file of statements as a tool sends them, each as a prepared statement on one connection:
// blocks start with "-- name: <label>", may bind parameters with "-- param: long <n>" or "-- param: string <s>",
// and the SQL follows. It prints "COLS\t<label>\t<names...>", one "ROW\t<label>\t<values...>" per row and
// "FAILED\t<label>\t<SQLSTATE>\t<message>" for a statement that fails, then goes on with the next one.
// On a SQL error it prints "SQLSTATE <code> <message>" and exits with status 3.
import java.sql.*;
import java.util.Properties;

public class LakegateJdbc {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("sslmode", "disable");
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            switch (args[3]) {
                case "query":
                    try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(args[4])) {
                        print(rs);
                    }
                    break;
                case "prepared":
                    // Run six times: pgJDBC switches to a named server-side statement (and binary results)
                    // after prepareThreshold (5) executions; print only the last result.
                    try (PreparedStatement p = c.prepareStatement(args[4])) {
                        for (int i = 0; i < 6; i++) {
                            p.setInt(1, Integer.parseInt(args[5]));
                            try (ResultSet rs = p.executeQuery()) {
                                if (i == 5) print(rs);
                            }
                        }
                    }
                    break;
                case "meta":
                    DatabaseMetaData md = c.getMetaData();
                    try (ResultSet rs = md.getTables(null, null, "%", new String[] {"TABLE"})) {
                        while (rs.next()) System.out.println("TABLE\t" + rs.getString("TABLE_SCHEM") + "\t" + rs.getString("TABLE_NAME"));
                    }
                    try (ResultSet rs = md.getColumns(null, null, "%", "%")) {
                        while (rs.next()) System.out.println("COLUMN\t" + rs.getString("TABLE_SCHEM") + "\t" + rs.getString("TABLE_NAME") + "\t" + rs.getString("COLUMN_NAME") + "\t" + rs.getString("TYPE_NAME"));
                    }
                    break;
                case "browse":
                    if (!browse(c.getMetaData())) System.exit(4);
                    break;
                case "script":
                    script(c, java.nio.file.Files.readAllLines(java.nio.file.Paths.get(args[4])));
                    break;
                default:
                    throw new IllegalArgumentException(args[3]);
            }
        } catch (SQLException e) {
            System.out.println("SQLSTATE " + e.getSQLState() + " " + e.getMessage());
            System.exit(3);
        }
    }

    interface Call { ResultSet run() throws SQLException; }

    static boolean ok = true;

    /** Prints every row of one metadata call as "<label>\t<col>\t<col>..." (the named columns only). */
    static java.util.List<String[]> walk(String label, Call call, String... columns) {
        java.util.List<String[]> rows = new java.util.ArrayList<>();
        try (ResultSet rs = call.run()) {
            while (rs.next()) {
                String[] row = new String[columns.length];
                StringBuilder line = new StringBuilder(label);
                for (int i = 0; i < columns.length; i++) {
                    row[i] = rs.getString(columns[i]);
                    line.append('\t').append(row[i]);
                }
                rows.add(row);
                System.out.println(line);
            }
        } catch (SQLException e) {
            ok = false;
            System.out.println("FAILED\t" + label + "\t" + e.getSQLState() + "\t" + e.getMessage().replace('\n', ' '));
        }
        return rows;
    }

    static boolean browse(DatabaseMetaData md) throws SQLException {
        System.out.println("PRODUCT\t" + md.getDatabaseProductName() + "\t" + md.getDatabaseProductVersion());
        System.out.println("USER\t" + md.getUserName());
        walk("CATALOG", md::getCatalogs, "TABLE_CAT");
        walk("SCHEMA", md::getSchemas, "TABLE_SCHEM");
        walk("TABLETYPE", md::getTableTypes, "TABLE_TYPE");
        walk("TYPEINFO", md::getTypeInfo, "TYPE_NAME", "DATA_TYPE");
        java.util.List<String[]> tables =
            walk("TABLE", () -> md.getTables(null, null, "%", null), "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE", "REMARKS");
        walk("VIEW", () -> md.getTables(null, null, "%", new String[] {"VIEW"}), "TABLE_SCHEM", "TABLE_NAME");
        for (String[] t : tables) {
            String schema = t[0], table = t[1];
            walk("COLUMN", () -> md.getColumns(null, schema, table, "%"),
                 "TABLE_SCHEM", "TABLE_NAME", "COLUMN_NAME", "TYPE_NAME", "ORDINAL_POSITION", "IS_NULLABLE");
            walk("PK", () -> md.getPrimaryKeys(null, schema, table), "TABLE_NAME", "COLUMN_NAME");
            walk("IMPORTED", () -> md.getImportedKeys(null, schema, table), "FKTABLE_NAME", "FKCOLUMN_NAME");
            walk("EXPORTED", () -> md.getExportedKeys(null, schema, table), "PKTABLE_NAME", "PKCOLUMN_NAME");
            walk("INDEX", () -> md.getIndexInfo(null, schema, table, false, true), "TABLE_NAME", "INDEX_NAME");
            walk("TABLEPRIV", () -> md.getTablePrivileges(null, schema, table), "TABLE_NAME", "PRIVILEGE");
        }
        walk("FUNCTION", () -> md.getFunctions(null, null, "%"), "FUNCTION_SCHEM", "FUNCTION_NAME");
        walk("PROCEDURE", () -> md.getProcedures(null, null, "%"), "PROCEDURE_SCHEM", "PROCEDURE_NAME");
        return ok;
    }

    /** One statement of a script: its label, its bound parameters ("long"/"string", value) and its text. */
    record Step(String label, java.util.List<String[]> params, StringBuilder sql) {}

    static void script(Connection c, java.util.List<String> lines) {
        java.util.List<Step> steps = new java.util.ArrayList<>();
        for (String line : lines) {
            if (line.startsWith("-- name: ")) {
                steps.add(new Step(line.substring(9).trim(), new java.util.ArrayList<>(), new StringBuilder()));
            } else if (line.startsWith("-- param: ") && !steps.isEmpty()) {
                steps.get(steps.size() - 1).params().add(line.substring(10).split(" ", 2));
            } else if (!steps.isEmpty()) {
                steps.get(steps.size() - 1).sql().append(line).append('\n');
            }
        }
        for (Step step : steps) {
            try (PreparedStatement p = c.prepareStatement(step.sql().toString().strip())) {
                for (int i = 0; i < step.params().size(); i++) {
                    String[] param = step.params().get(i);
                    if (param[0].equals("long")) p.setLong(i + 1, Long.parseLong(param[1]));
                    else p.setString(i + 1, param[1]);
                }
                if (!p.execute()) continue;
                try (ResultSet rs = p.getResultSet()) {
                    ResultSetMetaData md = rs.getMetaData();
                    StringBuilder cols = new StringBuilder("COLS\t").append(step.label());
                    for (int i = 1; i <= md.getColumnCount(); i++) cols.append('\t').append(md.getColumnLabel(i));
                    System.out.println(cols);
                    while (rs.next()) {
                        StringBuilder row = new StringBuilder("ROW\t").append(step.label());
                        for (int i = 1; i <= md.getColumnCount(); i++) row.append('\t').append(rs.getString(i));
                        System.out.println(row);
                    }
                }
            } catch (SQLException e) {
                System.out.println("FAILED\t" + step.label() + "\t" + e.getSQLState() + "\t"
                    + String.valueOf(e.getMessage()).replace('\n', ' '));
            }
        }
    }

    static void print(ResultSet rs) throws SQLException {
        int n = rs.getMetaData().getColumnCount();
        while (rs.next()) {
            StringBuilder line = new StringBuilder();
            for (int i = 1; i <= n; i++) {
                if (i > 1) line.append('\t');
                line.append(rs.getString(i));
            }
            System.out.println(line);
        }
    }
}
