import nuke_void.startup
nuke_void.startup.init()
