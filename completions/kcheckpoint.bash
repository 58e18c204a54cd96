# bash completion for kcheckpoint; the binary itself lists commands and
# options (`kcheckpoint __complete [CMD]`), so this never goes stale.
_kcheckpoint_files() { # $1: -f or -d; file names may hold spaces
	local IFS=$'\n'
	COMPREPLY=($(compgen "$1" -- "$cur"))
	compopt -o filenames 2>/dev/null
}
_kcheckpoint() {
	local cur prev cmd opt kind
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	# --opt=value: bash splits it at '=' (COMP_WORDBREAKS)
	if [ "$cur" = "=" ]; then
		prev=${COMP_WORDS[COMP_CWORD-1]}
		cur=
	elif [ "$prev" = "=" ] && [ "$COMP_CWORD" -ge 2 ]; then
		prev=${COMP_WORDS[COMP_CWORD-2]}
	fi
	COMPREPLY=()
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "$(kcheckpoint __complete 2>/dev/null)" -- "$cur"))
		return
	fi
	cmd=${COMP_WORDS[1]}
	local opts=() kinds=()
	while IFS=$'\t' read -r opt kind _; do
		opts+=("$opt")
		kinds+=("$kind")
	done < <(kcheckpoint __complete "$cmd" 2>/dev/null)
	local i
	for i in "${!opts[@]}"; do
		if [ "${opts[$i]}" = "$prev" ]; then
			case ${kinds[$i]} in
			flag) ;;
			file) _kcheckpoint_files -f; return ;;
			dir) _kcheckpoint_files -d; return ;;
			arg) return ;;
			*) COMPREPLY=($(compgen -W "${kinds[$i]}" -- "$cur")); return ;;
			esac
		fi
	done
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "${opts[*]}" -- "$cur"))
		return
	fi
	case $cmd in
	# every process of the machine, not only this terminal's
	dump | state | recover) COMPREPLY=($(compgen -W "$(ps -e -o pid= 2>/dev/null)" -- "$cur")) ;;
	restore | inspect) _kcheckpoint_files -f ;;
	esac
}
complete -F _kcheckpoint kcheckpoint
