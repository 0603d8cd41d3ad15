# Sourced by the benchmarks: postfix_instance DIR LISTEN LOGDIR prepares a
# Postfix instance in DIR: queue and data directories, the main.cf settings
# every benchmark shares (callers append their own), and a master.cf with
# smtpd on LISTEN and the relaying, discarding and Maildir (virtual)
# transports.
postfix_instance() {
    mkdir -p "$1/queue" "$1/data"; chown postfix "$1/data"
    cat > "$1/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $1/queue
data_directory = $1/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
myhostname = pf.bench.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
maillog_file = $1/maillog
maillog_file_prefixes = $3
default_process_limit = 200
CF
    cat > "$1/master.cf" <<CF
$2 inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
virtual   unix  - n n -  - virtual
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
CF
}
