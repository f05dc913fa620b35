// Preloaded into the test suite's origin server (node --import): every server listens on
// 127.0.0.1 only, whatever the suite asks for (it listens on all interfaces by default).
import net from 'node:net'

const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args.length > 0 && typeof args[0] === 'object' && args[0] !== null) {
    args[0] = { ...args[0], host: '127.0.0.1' }
  } else if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (typeof args[1] === 'string') {
      args[1] = '127.0.0.1'
    } else {
      args.splice(1, 0, '127.0.0.1')
    }
  }
  return listen.apply(this, args)
}
