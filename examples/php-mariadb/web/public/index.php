<?php
// The guestbook: every request adds a row and shows how many there are; the visitor's own
// count lives in a session kept in memcached. Services come from KILN_RELATIONSHIPS (base64
// of a JSON object: relationship name -> [{service, host, ip, port, scheme}]).
declare(strict_types=1);

function relationship(string $name): array
{
    $all = json_decode(base64_decode(getenv('KILN_RELATIONSHIPS') ?: '') ?: '{}', true, 8, JSON_THROW_ON_ERROR);
    if (empty($all[$name][0])) {
        throw new RuntimeException("no `$name` relationship in KILN_RELATIONSHIPS");
    }
    return $all[$name][0];
}

set_exception_handler(function (Throwable $e): void {
    http_response_code(500);
    header('Content-Type: text/plain');
    echo 'error: ', $e->getMessage(), "\n";
});

$cache = relationship('sessions');
ini_set('session.save_handler', 'memcached');
ini_set('session.save_path', $cache['ip'] . ':' . $cache['port']);
session_start();
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;

$db = relationship('database');
$pdo = new PDO(
    sprintf('mysql:host=%s;port=%d;dbname=guestbook;charset=utf8mb4', $db['ip'], $db['port']),
    'guestbook',
    'guestbook-dev',
    [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]
);
$pdo->exec('CREATE TABLE IF NOT EXISTS visits (id INT AUTO_INCREMENT PRIMARY KEY, path VARCHAR(255) NOT NULL) ENGINE=InnoDB');
$pdo->prepare('INSERT INTO visits (path) VALUES (?)')->execute([$_SERVER['REQUEST_URI']]);
$rows = (int) $pdo->query('SELECT COUNT(*) FROM visits')->fetchColumn();

header('Content-Type: text/plain');
echo "guestbook rows=$rows session_visits={$_SESSION['visits']}\n";
