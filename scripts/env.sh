# Sourced by the scripts: a runtime dir for the Vulkan loader, and the software adapter
# to use when no GPU driver is installed.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/gloss-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
