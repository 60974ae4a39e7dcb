// A small pgJDBC client for the SQL gateway tests: runs one query (plain statement, then the same as a
// server-prepared statement) or lists DatabaseMetaData tables and columns, printing tab-separated rows.
//
// usage: java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> query <sql>
//        java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> prepared <sql> <int-param>
//        java -cp postgresql.jar:. LakegateJdbc <jdbc-url> <user> <token> meta
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
                default:
                    throw new IllegalArgumentException(args[3]);
            }
        } catch (SQLException e) {
            System.out.println("SQLSTATE " + e.getSQLState() + " " + e.getMessage());
            System.exit(3);
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
