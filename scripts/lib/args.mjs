// Command-line arguments of the scripts: `--name value` flags and one positional argument.
const args = process.argv.slice(2);

/** The value after `--name`, or `dflt` where the flag is absent. */
export const flag = (name, dflt) => { const i = args.indexOf(`--${name}`); return i < 0 ? dflt : args[i + 1]; };

/** The first argument that is neither a flag nor a flag's value. */
export const positional = () => args.find((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
