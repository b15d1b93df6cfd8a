package router

// directIO: *net.TCPConn.ReadFrom splices from another TCP connection.
const directIO = true
