# bash completion for kcheckpoint; the binary itself lists commands and
# options (`kcheckpoint __complete [CMD]`), so this never goes stale.
_kcheckpoint() {
	local cur prev cmd line opt kind
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
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
			file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
			dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
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
	dump | state | recover) COMPREPLY=($(compgen -W "$(ps -eo pid= 2>/dev/null)" -- "$cur")) ;;
	restore | inspect) COMPREPLY=($(compgen -f -- "$cur")) ;;
	esac
}
complete -F _kcheckpoint kcheckpoint
